"""xstilts.mlflow_store: the one place runs are found. Its fast sqlite reader must return exactly
what MLflow's own search_runs returns (same runs, order, tags, params, latest metrics incl. NaN),
on a real sqlite tracking store."""
from __future__ import annotations

import math

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from xstilts.mlflow_store import (absolute_sqlite_uri, child_rows, find_study_run, find_trial_run, search_child_rows,
                                  sqlite_path, study_row)
from xstilts.mlflow_store.runs import _sqlite_child_rows, _sqlite_study_row
from xstilts.tasks.record_schema import TAG_KIND, TAG_PARENT, TAG_STUDY, TAG_TRIAL_ID


def _comparable(rows):
    # NaN != NaN: compare it as a marker
    return [(r.run_id, r.experiment_id, r.status, r.start_time, r.end_time, r.tags, r.params,
             {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in r.metrics.items()}) for r in rows]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("xstilts")
    parents = {}
    for name in ("alpha", "beta"):
        parents[name] = client.create_run(experiment_id, run_name=name, tags={TAG_KIND: "study", TAG_STUDY: name}).info.run_id
        client.log_param(parents[name], "model", "tiny")
        client.log_metric(parents[name], "study_wall_seconds", 12.5)
    for index in range(5):
        run = client.create_run(experiment_id, tags={TAG_PARENT: parents["alpha"], TAG_KIND: "trial",
                                                     TAG_TRIAL_ID: f"t{index}"}).info.run_id
        client.log_param(run, "target_lr", str(1e-5 * (index + 1)))
        client.log_batch(run, metrics=[Metric("en_dev_score", 50.0 + step + index, 1000 + step, step) for step in range(3)])
        if index == 1:
            client.log_metric(run, "final/dev/xx/accuracy", float("nan"))
        if index == 3:
            client.delete_run(run)  # deleted runs are not the study's
        elif index != 4:
            client.set_terminated(run, status="FINISHED")
    other = client.create_run(experiment_id, tags={TAG_PARENT: parents["beta"], TAG_TRIAL_ID: "t0"}).info.run_id
    return uri, experiment_id, parents, other


def test_sqlite_children_equal_search_runs(store):
    uri, experiment_id, parents, _ = store
    fast = _sqlite_child_rows(uri, experiment_id, parents["alpha"])
    searched = list(search_child_rows(uri, experiment_id, parents["alpha"], page_size=2))  # several pages
    assert fast is not None and len(fast) == 4  # 5 trials, one deleted
    assert _comparable(fast) == _comparable(searched)
    assert [row.metrics["en_dev_score"] for row in fast if row.tags[TAG_TRIAL_ID] == "t2"] == [54.0]  # latest step
    assert _comparable(list(child_rows(uri, experiment_id, parents["alpha"]))) == _comparable(searched)


def test_sqlite_study_row_equals_search_runs(store, monkeypatch):
    uri, experiment_id, parents, _ = store
    fast = _sqlite_study_row(uri, "xstilts", "alpha")
    monkeypatch.setattr("xstilts.mlflow_store.runs._sqlite_study_row", lambda *a: None)  # force MLflow's search
    searched = study_row(uri, "xstilts", "alpha")
    assert fast[0] == searched[0] == experiment_id
    assert _comparable([fast[1]]) == _comparable([searched[1]])
    assert fast[1].run_id == parents["alpha"] and fast[1].params == {"model": "tiny"}
    # no name: the most recent study, the same both ways
    assert study_row(uri, "xstilts")[1].run_id == _sqlite_study_row(uri, "xstilts", None)[1].run_id == parents["beta"]
    assert study_row(uri, "xstilts", "gamma") == (experiment_id, None)
    assert study_row(uri, "nope") == (None, None)


def test_find_runs_by_tags(store):
    uri, experiment_id, parents, other = store
    client = MlflowClient(uri)
    assert find_study_run(client, experiment_id, "beta").info.run_id == parents["beta"]
    assert find_study_run(client, experiment_id, "gamma") is None
    assert find_trial_run(client, experiment_id, parents["beta"], "t0").info.run_id == other
    assert find_trial_run(client, experiment_id, parents["alpha"], "t9") is None


def test_sqlite_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///runs/mlflow.db") == "runs/mlflow.db"
    assert sqlite_path("sqlite:////abs/mlflow.db") == "/abs/mlflow.db"
    assert absolute_sqlite_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert absolute_sqlite_uri("http://mlflow:5000") == "http://mlflow:5000"
