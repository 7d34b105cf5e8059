"""What `xstilts.study.cluster_fit` reads from an autoscaling config, and the links printed after a study."""
from __future__ import annotations

from xstilts.study.cluster_fit import fits, node_types_of, worker_bundle
from xstilts.trainables.config import ResourceOptions


def test_a_worker_bundle_fits_a_node_type_only_with_room_for_all_of_it():
    bundle = worker_bundle(ResourceOptions(cpus_per_worker=4, use_gpu=True))
    assert bundle == {"CPU": 4.0, "GPU": 1.0}
    assert fits(bundle, {"CPU": 8, "GPU": 1, "memory": 1e9})
    assert not fits(bundle, {"CPU": 8})  # no GPU on that node type
    assert not fits(bundle, {"CPU": 2, "GPU": 4})


def test_node_types_of_an_autoscaling_config():
    config = {"head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "gpu": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 4},
        "off": {"resources": {"CPU": 64}, "max_workers": 0},  # can never be launched
    }}
    assert [(t.name, t.resources) for t in node_types_of(config)] == [("gpu", {"CPU": 8.0, "GPU": 1.0})]
    # Resources left to auto-detection (a cloud instance type): unknown, so nothing can be refused.
    assert node_types_of({"available_node_types": {"w": {"resources": {}, "max_workers": 2}}}) is None
    assert node_types_of({}) is None


def test_mlflow_links_go_to_the_runs_page_and_never_show_a_password():
    from xstilts.study.cli import mlflow_links

    local = mlflow_links("sqlite:////tmp/x/mlflow.db", "7", "abc")
    assert local == {"runs": "http://127.0.0.1:5000/#/experiments/7/runs",
                     "study_run": "http://127.0.0.1:5000/#/experiments/7/runs/abc"}
    remote = mlflow_links("https://alice:s3cret@mlflow.example.org/", "3", "r1")
    assert remote["runs"] == "https://alice:***@mlflow.example.org/#/experiments/3/runs"
    assert "s3cret" not in remote["study_run"]


def test_trial_configs_hold_the_tracking_uri_redacted_and_trials_connect_with_the_real_one(monkeypatch):
    from xstilts.study.config import load_config
    from xstilts.study.runner import _trial_env, resolve, trial_base_config
    from xstilts.trainables.config import TRACKING_URI_ENV, trial_tracking_uri

    import dataclasses

    config = load_config(None)
    real = "postgresql://alice:s3cret@db.example.org/mlflow"
    config = dataclasses.replace(config, mlflow=dataclasses.replace(config.mlflow, tracking_uri=real))
    study = resolve(config, "links")
    base = trial_base_config(study, "synthetic_xnli", "/models/m", "1", "run")
    assert "s3cret" not in repr(base) and base["mlflow_tracking_uri"] == "postgresql://alice:***@db.example.org/mlflow"
    env = _trial_env(real)
    assert env == {TRACKING_URI_ENV: real}  # what every Ray worker of the study gets
    monkeypatch.setenv(TRACKING_URI_ENV, real)
    assert trial_tracking_uri(base["mlflow_tracking_uri"]) == real
    assert _trial_env("sqlite:////tmp/mlflow.db") == {}  # nothing secret: nothing extra
