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
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.config import DEFAULT_CONFIG

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]

DRIVER = textwrap.dedent("""
    import sys
    import yaml
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    import study.runner as runner
    from study.config import parse_config

    class StopAfterFirstEpoch(FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            if result.get("target_epoch", 0) >= 1 and trial.config.get("intermediate_task") != "none":
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    runner.make_scheduler = lambda config: StopAfterFirstEpoch()
    config = parse_config(yaml.safe_load(open(sys.argv[1])), sys.argv[1])
    print("completed:", runner.run_study(runner.resolve(config, "stop-me")))
""")


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
