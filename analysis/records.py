"""What analysis knows of a study: read back from MLflow only (never Ray's result files).

Runs are read with MLflow's paginated search, one page at a time, so a study of many thousands
of trials is streamed rather than loaded twice; from a sqlite store they are read with four plain
queries instead (the same records, ~10x faster: see `_sqlite_trials`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from xstilts.tasks.record_schema import (EPOCH_EN_DEV, FINAL_DEV_PREFIX, FINAL_EN_DEV, TAG_CHECKPOINT, TAG_INTERMEDIATE, TAG_KIND,
                                 TAG_PARENT, TAG_SELECTION_METRIC, TAG_STUDY, TAG_TARGET, TAG_TRIAL_ID)


class StudyNotFound(LookupError):
    pass


# EPOCH_EN_DEV (xstilts.tasks.record_schema), the per-epoch English dev selection metric, is the only
# score a trial stopped early by the scheduler has (its last value is what search_runs returns).


@dataclass(frozen=True)
class TrialRecord:
    run_id: str
    trial_id: str
    status: str
    target_task: str
    intermediate_task: str
    selection_metric: str
    params: dict[str, str]
    metrics: dict[str, float]
    checkpoint: str | None
    start_time: int | None = None  # MLflow run start, ms since the epoch
    end_time: int | None = None

    @property
    def completed(self) -> bool:
        return self.status == "FINISHED" and FINAL_EN_DEV in self.metrics and bool(self.checkpoint)

    @property
    def en_dev_score(self) -> float | None:
        return self.metrics.get(FINAL_EN_DEV)

    @property
    def last_en_dev_score(self) -> float | None:
        """The final English dev score, or for a trial stopped early its last epoch's."""
        return self.metrics.get(FINAL_EN_DEV, self.metrics.get(EPOCH_EN_DEV))

    def language_scores(self) -> dict[str, float]:
        """Final dev score of the selection metric per language."""
        suffix = f"/{self.selection_metric}"
        return {k[len(FINAL_DEV_PREFIX):-len(suffix)]: v for k, v in self.metrics.items()
                if k.startswith(FINAL_DEV_PREFIX) and k.endswith(suffix)}


@dataclass(frozen=True)
class StudyRecord:
    name: str
    run_id: str
    experiment_id: str
    status: str
    tracking_uri: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the parent run's (study_wall_seconds)


def _no_experiment(tracking_uri: str, experiment: str) -> StudyNotFound:
    return StudyNotFound(f"no MLflow experiment {experiment!r} at {tracking_uri}; run `xstilts run` first or pass --tracking-uri/--experiment")


def _no_study(tracking_uri: str, experiment: str, name: str | None) -> StudyNotFound:
    what = f"study {name!r}" if name else "any study"
    return StudyNotFound(f"no {what} in experiment {experiment!r} at {tracking_uri}; `xstilts analyze --list` shows the studies there")


def find_study(tracking_uri: str, experiment: str, name: str | None = None) -> StudyRecord:
    """The study's parent run by name, or the most recent study of the experiment."""
    if tracking_uri.startswith("sqlite:"):
        study = _sqlite_find_study(tracking_uri, experiment, name)
        if study is not None:
            return study
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise _no_experiment(tracking_uri, experiment)
    query = f"tags.`{TAG_KIND}` = 'study'" + (f" and tags.`{TAG_STUDY}` = '{name}'" if name else "")
    runs = client.search_runs([found.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise _no_study(tracking_uri, experiment, name)
    run = runs[0]
    return StudyRecord(run.data.tags[TAG_STUDY], run.info.run_id, found.experiment_id, run.info.status,
                       tracking_uri, dict(run.data.params), dict(run.data.metrics))


def list_studies(tracking_uri: str, experiment: str) -> list[StudyRecord]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'study'",
                              order_by=["attributes.start_time DESC"])
    return [StudyRecord(r.data.tags[TAG_STUDY], r.info.run_id, found.experiment_id, r.info.status, tracking_uri)
            for r in runs]


def iter_trials(study: StudyRecord, page_size: int = 1000) -> Iterator[TrialRecord]:
    """The study's trial runs, one MLflow page at a time (from a sqlite store: see _sqlite_trials)."""
    if study.tracking_uri.startswith("sqlite:"):
        trials = _sqlite_trials(study)
        if trials is not None:
            yield from trials
            return
    yield from _api_trials(study, page_size)


def _record(run_id: str, status: str, start_time, end_time, tags: dict, params: dict, metrics: dict) -> TrialRecord:
    return TrialRecord(
        run_id=run_id, trial_id=tags.get(TAG_TRIAL_ID, ""), status=status,
        target_task=tags.get(TAG_TARGET, ""), intermediate_task=tags.get(TAG_INTERMEDIATE, ""),
        selection_metric=tags.get(TAG_SELECTION_METRIC, ""), params=params,
        metrics=metrics, checkpoint=tags.get(TAG_CHECKPOINT), start_time=start_time, end_time=end_time,
    )


# Why a second reader: MLflow's search_runs on a SQL store builds a SQLAlchemy ORM object for every
# tag, param and metric row (~40-80 per trial), ~2-3 ms per trial here: 20-35 s for a 10k-trial
# study. The same rows read with four plain queries take a fraction of a second. The queries read
# the tables of the pinned MLflow's schema (runs, tags, params, latest_metrics) and return exactly
# what search_runs returns: active runs whose mlflow.parentRunId tag is the study, in search_runs'
# natural order (start_time DESC, then run_uuid), with each metric's latest value (NaN stored as
# is_nan). Any surprise (another schema, a locked file) falls back to search_runs.
_CHILD_RUNS = ("SELECT run_uuid FROM tags WHERE key = ? AND value = ?")


def _sqlite_connect(uri: str):
    """A read-only connection to the store of a sqlite:/// tracking URI, or None."""
    import sqlite3

    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri[len("sqlite://"):]
    if not path or path == ":memory:" or not os.path.isfile(path):
        return None
    try:
        return sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None


def _sqlite_find_study(tracking_uri: str, experiment: str, name: str | None) -> StudyRecord | None:
    """find_study's answer read with plain queries (what get_experiment_by_name + search_runs
    return: the experiment in any lifecycle stage, its most recent active study run)."""
    import sqlite3

    connection = _sqlite_connect(tracking_uri)
    if connection is None:
        return None
    try:
        experiments = connection.execute("SELECT experiment_id FROM experiments WHERE name = ?", (experiment,)).fetchall()
        if len(experiments) != 1:  # none (MLflow may still know better: ask it), or one per workspace
            return None
        experiment_id = experiments[0][0]
        query = ("SELECT run_uuid, status FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active' "
                 "AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = 'study')")
        values: tuple = (experiment_id, TAG_KIND)
        if name:
            query += " AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)"
            values += (TAG_STUDY, name)
        found = connection.execute(query + " ORDER BY start_time DESC, run_uuid LIMIT 1", values).fetchone()
        if found is None:
            raise _no_study(tracking_uri, experiment, name)
        run_id, status = found
        study_name = connection.execute("SELECT value FROM tags WHERE run_uuid = ? AND key = ?", (run_id, TAG_STUDY)).fetchone()
        params = dict(connection.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall())
        metrics = dict(connection.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = ?", (run_id,)).fetchall())
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    if study_name is None:
        return None
    return StudyRecord(study_name[0], run_id, str(experiment_id), status, tracking_uri, params, metrics)


def _sqlite_trials(study: StudyRecord) -> list[TrialRecord] | None:
    import sqlite3

    connection = _sqlite_connect(study.tracking_uri)
    if connection is None:
        return None
    try:
        key = (TAG_PARENT, study.run_id)
        runs = connection.execute(
            f"SELECT run_uuid, status, start_time, end_time FROM runs WHERE experiment_id = ? "
            f"AND lifecycle_stage = 'active' AND run_uuid IN ({_CHILD_RUNS}) ORDER BY start_time DESC, run_uuid",
            (int(study.experiment_id), *key)).fetchall()
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
    return [_record(run_id, status, start, end, tags[run_id], params[run_id], metrics[run_id])
            for run_id, status, start, end in runs]


def _api_trials(study: StudyRecord, page_size: int) -> Iterator[TrialRecord]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(study.tracking_uri)
    token = None
    while True:
        page = client.search_runs([study.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{study.run_id}'",
                                  max_results=page_size, page_token=token)
        for run in page:
            yield _record(run.info.run_id, run.info.status, run.info.start_time, run.info.end_time,
                          dict(run.data.tags), dict(run.data.params), dict(run.data.metrics))
        token = page.token
        if not token:
            return
