"""Finding runs in an MLflow tracking store: the study's parent run, a trial's run, a study's
trial runs. The one place that knows how runs are found (which tags, which filter strings) and
where a sqlite store's file is; `xstilts.study`, `xstilts.trainables` and `xstilts.analysis` all
ask here. Answers are `RunRow`s (plain values), so callers need not know MLflow's entities.

From a sqlite store the study and its trials are read with plain queries when possible (see
`_sqlite_child_rows`); `tests/test_mlflow_store.py` checks they return exactly what MLflow's
`search_runs` returns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from xstilts.tasks.record_schema import TAG_KIND, TAG_PARENT, TAG_STUDY, TAG_TRIAL_ID

STUDY_KIND = "study"  # TAG_KIND of a study's parent run
TRIAL_KIND = "trial"  # TAG_KIND of a trial's nested run


@dataclass(frozen=True)
class RunRow:
    run_id: str
    experiment_id: str
    status: str
    start_time: int | None = None  # ms since the epoch
    end_time: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # each metric's latest value


def sqlite_path(uri: str) -> str:
    """The database file of a sqlite:// tracking URI."""
    return uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri[len("sqlite://"):]


def absolute_sqlite_uri(uri: str) -> str:
    """A sqlite URI with an absolute path (the same store from any working folder); others as given."""
    if not uri.startswith("sqlite:"):
        return uri
    return "sqlite:///" + str(Path(sqlite_path(uri)).expanduser().absolute())


def study_filter(name: str | None = None) -> str:
    """The search_runs filter of a study's parent run (any study when `name` is None). Names
    reaching here are checked by `xstilts.study.config.check_name`: no quotes."""
    query = f"tags.`{TAG_KIND}` = '{STUDY_KIND}'"
    return query + (f" and tags.`{TAG_STUDY}` = '{name}'" if name else "")


def trial_filter(parent_run_id: str, trial_id: str | None = None) -> str:
    """The search_runs filter of a study's trial runs (one trial's when `trial_id` is given)."""
    query = f"tags.`{TAG_PARENT}` = '{parent_run_id}'"
    return query + (f" and tags.`{TAG_TRIAL_ID}` = '{trial_id}'" if trial_id else "")


def _row(run) -> RunRow:
    return RunRow(run.info.run_id, run.info.experiment_id, run.info.status, run.info.start_time, run.info.end_time,
                  dict(run.data.tags), dict(run.data.params), dict(run.data.metrics))


def kind_rows(tracking_uri: str, experiment_id: str, kind: str, study: str) -> list[RunRow]:
    """A study's runs of another kind than its trials (e.g. "rank": `xstilts rank`), most recent first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    query = f"tags.`{TAG_KIND}` = '{kind}' and tags.`{TAG_STUDY}` = '{study}'"
    return [_row(run) for run in client.search_runs([experiment_id], filter_string=query,
                                                     order_by=["attributes.start_time DESC"])]


def find_study_run(client, experiment_id: str, name: str | None = None):
    """The study's parent run (an MLflow Run: writers need it whole), the most recent one of
    that name (of any study when `name` is None), or None."""
    runs = client.search_runs([experiment_id], filter_string=study_filter(name),
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def find_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """A trial's run (an MLflow Run), or None."""
    runs = client.search_runs([experiment_id], filter_string=trial_filter(parent_run_id, trial_id), max_results=1)
    return runs[0] if runs else None


def study_row(tracking_uri: str, experiment: str, name: str | None = None) -> tuple[str | None, RunRow | None]:
    """(experiment id or None when there is no such experiment, the study's parent run or None):
    the named study's most recent run, or the experiment's most recent study."""
    if tracking_uri.startswith("sqlite:"):
        found = _sqlite_study_row(tracking_uri, experiment, name)
        if found is not None:
            return found
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_entity = client.get_experiment_by_name(experiment)
    if experiment_entity is None:
        return None, None
    run = find_study_run(client, experiment_entity.experiment_id, name)
    return experiment_entity.experiment_id, None if run is None else _row(run)


def study_rows(tracking_uri: str, experiment: str) -> list[RunRow]:
    """Every study's parent run in the experiment, most recent first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [_row(run) for run in client.search_runs([found.experiment_id], filter_string=study_filter(),
                                                     order_by=["attributes.start_time DESC"])]


def child_rows(tracking_uri: str, experiment_id: str, parent_run_id: str, page_size: int = 1000) -> Iterator[RunRow]:
    """A study's trial runs (active runs nested under its parent run), in search_runs' order,
    streamed one MLflow page at a time (from a sqlite store: read at once, see below)."""
    if tracking_uri.startswith("sqlite:"):
        rows = _sqlite_child_rows(tracking_uri, experiment_id, parent_run_id)
        if rows is not None:
            yield from rows
            return
    yield from search_child_rows(tracking_uri, experiment_id, parent_run_id, page_size)


def search_child_rows(tracking_uri: str, experiment_id: str, parent_run_id: str, page_size: int = 1000) -> Iterator[RunRow]:
    """`child_rows` through MLflow's paginated search_runs (any store)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=trial_filter(parent_run_id),
                                  max_results=page_size, page_token=token)
        yield from (_row(run) for run in page)
        token = page.token
        if not token:
            return


# Why a second reader: MLflow's search_runs on a SQL store builds a SQLAlchemy ORM object for every
# tag, param and metric row (~40-80 per trial), ~2-3 ms per trial here: 20-35 s for a 10k-trial
# study. The same rows read with four plain queries take a fraction of a second. The queries read
# the tables of the pinned MLflow's schema (runs, tags, params, latest_metrics) and return exactly
# what search_runs returns: active runs whose mlflow.parentRunId tag is the study, in search_runs'
# natural order (start_time DESC, then run_uuid), with each metric's latest value (NaN stored as
# is_nan). Any surprise (another schema, a locked file) falls back to search_runs.
_CHILD_RUNS = "SELECT run_uuid FROM tags WHERE key = ? AND value = ?"


def _sqlite_connect(uri: str):
    """A read-only connection to the store of a sqlite:/// tracking URI, or None."""
    import sqlite3

    path = sqlite_path(uri)
    if not path or path == ":memory:" or not os.path.isfile(path):
        return None
    try:
        return sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None


def _sqlite_study_row(tracking_uri: str, experiment: str, name: str | None) -> tuple[str, RunRow | None] | None:
    """study_row's answer read with plain queries (what get_experiment_by_name + search_runs
    return: the experiment in any lifecycle stage, its most recent active study run); None when
    only MLflow itself can tell."""
    import sqlite3

    connection = _sqlite_connect(tracking_uri)
    if connection is None:
        return None
    try:
        experiments = connection.execute("SELECT experiment_id FROM experiments WHERE name = ?", (experiment,)).fetchall()
        if len(experiments) != 1:  # none (MLflow may still know better: ask it), or one per workspace
            return None
        experiment_id = str(experiments[0][0])
        query = ("SELECT run_uuid, status, start_time, end_time FROM runs WHERE experiment_id = ? "
                 "AND lifecycle_stage = 'active' AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)")
        values: tuple = (int(experiment_id), TAG_KIND, STUDY_KIND)
        if name:
            query += " AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)"
            values += (TAG_STUDY, name)
        found = connection.execute(query + " ORDER BY start_time DESC, run_uuid LIMIT 1", values).fetchone()
        if found is None:
            return experiment_id, None
        run_id, status, start, end = found
        tags = dict(connection.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
        params = dict(connection.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall())
        metrics = {key: float("nan") if is_nan else value for key, value, is_nan in connection.execute(
            "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", (run_id,)).fetchall()}
    except (sqlite3.Error, ValueError):
        return None
    finally:
        connection.close()
    return experiment_id, RunRow(run_id, experiment_id, status, start, end, tags, params, metrics)


def _sqlite_child_rows(tracking_uri: str, experiment_id: str, parent_run_id: str) -> list[RunRow] | None:
    import sqlite3

    connection = _sqlite_connect(tracking_uri)
    if connection is None:
        return None
    try:
        key = (TAG_PARENT, parent_run_id)
        runs = connection.execute(
            f"SELECT run_uuid, status, start_time, end_time FROM runs WHERE experiment_id = ? "
            f"AND lifecycle_stage = 'active' AND run_uuid IN ({_CHILD_RUNS}) ORDER BY start_time DESC, run_uuid",
            (int(experiment_id), *key)).fetchall()
        tags: dict[str, dict] = {run[0]: {} for run in runs}
        params: dict[str, dict] = {run[0]: {} for run in runs}
        metrics: dict[str, dict] = {run[0]: {} for run in runs}
        for run_id, name, value in connection.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({_CHILD_RUNS})", key):
            if run_id in tags:
                tags[run_id][name] = value
        for run_id, name, value in connection.execute(
                f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({_CHILD_RUNS})", key):
            if run_id in params:
                params[run_id][name] = value
        for run_id, name, value, is_nan in connection.execute(
                f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({_CHILD_RUNS})", key):
            if run_id in metrics:
                metrics[run_id][name] = float("nan") if is_nan else value
    except (sqlite3.Error, ValueError):
        return None
    finally:
        connection.close()
    return [RunRow(run_id, str(experiment_id), status, start, end, tags[run_id], params[run_id], metrics[run_id])
            for run_id, status, start, end in runs]


def read_text_artifact(tracking_uri: str, run_id: str, path: str) -> str | None:
    """A run's small text artifact (a trial's final_examples.json, a study's study_config.yaml),
    or None when it has none. No progress bar: commands that read one keep stderr to their own lines."""
    import os
    import tempfile

    from mlflow.tracking import MlflowClient

    from xstilts.mlflow_store.retry import call_with_retry

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = call_with_retry(lambda: client.download_artifacts(run_id, path, folder), what=f"reading {path}")
        except Exception:  # noqa: BLE001 - absent (an older trial, a retrieval target, no stored config)
            return None
        with open(local, encoding="utf-8") as handle:
            return handle.read()


def read_json_artifact(tracking_uri: str, run_id: str, path: str) -> dict | None:
    """A run's JSON artifact, or None when it has none."""
    import json

    text = read_text_artifact(tracking_uri, run_id, path)
    return None if text is None else json.loads(text)
