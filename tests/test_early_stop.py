"""A trial the scheduler stops while Ray Train is running it: its MLflow run ends KILLED and
tagged stopped early (not FAILED), and the study goes on.

ASHA's decisions depend on the scores, so a real study stops a trial only sometimes. Here a real
Ray Tune scheduler stops every trial with an intermediate task after its first target epoch,
every time; the rest of the study (Ray, Train, Optuna, MLflow) is the real one the CLI runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from xstilts.study.config import DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parents[1]

DRIVER = textwrap.dedent("""
    import sys
    import yaml
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    import xstilts.study.runner as runner
    from xstilts.study.config import parse_config

    class StopAfterFirstEpoch(FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            if result.get("target_epoch", 0) >= 1 and trial.config.get("intermediate_task") != "none":
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    runner.make_scheduler = lambda config: StopAfterFirstEpoch()
    config = parse_config(yaml.safe_load(open(sys.argv[1])), sys.argv[1])
    print("completed:", runner.run_study(runner.resolve(config, "stop-me")))
""")


@pytest.mark.e2e
def test_a_trial_stopped_by_the_scheduler_is_killed_not_failed(tmp_path: Path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="stop", num_samples=2, max_concurrent_trials=2, target_tasks=["synthetic_xnli"])
    raw["training"].update(target_epochs=3, intermediate_epochs=1, max_train_examples=300)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "driver.py", "study.yaml"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    assert "completed: {'synthetic_xnli': 1}" in result.stdout, output  # the trial that ran to the end

    client = MlflowClient(f"sqlite:///{tmp_path / 'xstilts_runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("xstilts").experiment_id])
    trials = {r.data.params["intermediate_task"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert sorted(trials) == ["none", "synthetic_mnli"], output
    stopped = trials["synthetic_mnli"]
    assert stopped.info.status == "KILLED", f"{stopped.info.status}: {stopped.data.tags.get('xstilts.error')}\n{output}"
    assert stopped.data.tags.get("xstilts.stopped_early") == "true"
    assert "xstilts.error" not in stopped.data.tags
    # Its workers may log one more epoch while Tune tears the trial down; the first is the one ASHA saw.
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "en_dev_score")][0] == 1
    assert "final/dev/en/accuracy" not in stopped.data.metrics  # it never reached its final evaluation
    finished = trials["none"]
    assert finished.info.status == "FINISHED" and "final/dev/en/accuracy" in finished.data.metrics
    assert "stopped early by the scheduler after 1 epochs" in result.stdout, output


class FakeRun:
    """The trial's MLflow run, in memory (the e2e test above uses the real one)."""
    instances: list = []

    def __init__(self, stopped_by_study: bool = False):
        self.run_id, self.finished_metrics, self.status = "r1", None, "RUNNING"
        self.tags: dict = {}
        self._stopped_by_study = stopped_by_study

    @classmethod
    def open(cls, *args, **kwargs):
        return cls.instances[-1]

    def log_params(self, params):
        pass

    def set_tags(self, tags):
        self.tags.update(tags)

    def stopped_by_study(self):
        return self._stopped_by_study

    def finish(self, status="FINISHED"):
        self.status = status


@pytest.mark.parametrize("stop_event_set,stopped_by_study,status", [
    (True, False, "KILLED"),   # Tune set the stop event, then fit() raised as the actor went down
    (False, True, "KILLED"),   # the event could not be read, the study's callback already tagged it
    (False, False, "FAILED"),  # a real error
])
def test_an_error_after_the_stop_request_closes_the_run_as_killed(monkeypatch, tmp_path, stop_event_set,
                                                                   stopped_by_study, status):
    import ray.tune

    import xstilts.trainables.trial as trial_module

    event = threading.Event()

    def fit_dies(*args, **kwargs):
        if stop_event_set:
            event.set()  # Tune's stop() ran first, and dropped its session (get_session() is None)
        raise RuntimeError("The actor died unexpectedly before finishing this task.")

    run = FakeRun(stopped_by_study)
    FakeRun.instances[:] = [run]
    monkeypatch.setattr(trial_module, "TrialRun", FakeRun)
    monkeypatch.setattr(trial_module, "tune_stop_event", lambda: event)
    monkeypatch.setattr(trial_module, "_fit", fit_dies)
    monkeypatch.setattr(ray.tune, "get_context", lambda: type("Context", (), {"get_trial_id": lambda self: "t1"})())
    config = {
        "study_name": "s", "target_task": "synthetic_xnli", "intermediate_task": "none", "intermediate_lr": 0.0,
        "target_lr": 1e-3, "model_path": str(tmp_path), "seed": 0, "storage_path": str(tmp_path),
        "phase_cache_dir": str(tmp_path / "cache"), "mlflow_tracking_uri": "unused", "mlflow_experiment_id": "0",
        "mlflow_parent_run_id": "p", "training": {"target_epochs": 3}, "resources": {},
    }
    with pytest.raises(RuntimeError, match="actor died"):
        trial_module.run_trial(config)
    assert run.status == status
    if status == "KILLED":
        assert run.tags == {"xstilts.stopped_early": "true"}
    else:
        assert "actor died" in run.tags["xstilts.error"] and "xstilts.stopped_early" not in run.tags


def test_stopped_by_study_reads_the_callbacks_tag(tmp_path):
    from xstilts.trainables.trial_run import TrialRun

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("x")
    run = TrialRun.open(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_id, "parent", "t1", run_name="t1", tags={})
    assert not run.stopped_by_study()
    client.set_tag(run.run_id, "xstilts.stopped_early", "true")  # what StudyProgress._close_stopped writes
    assert run.stopped_by_study()
