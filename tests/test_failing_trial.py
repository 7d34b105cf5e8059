"""A trial that raises is recorded as FAILED with its error in MLflow, and the study goes on.

The study searches intermediate tasks [none, qqp] with a local data folder whose QQP training
file is malformed: it exists (so the pre-flight check, which only looks for files, lets the
study start) but does not parse. Every trial that picks qqp fails inside its Ray Train phase 2;
the `none` trials finish. The study exits 0 (`xstilts run` fails only when a target has no
completed trial at all), and the failure is in MLflow, not only in Ray's logs.

Then the data is fixed and `xstilts resume` runs the failed trials again (Tune's
restart_errored): they finish in their own MLflow runs, which keep the old error as
`xstilts.previous_error` and count the attempt.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xstilts.study.config import DEFAULT_CONFIG

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks" / "data"
NAME = "failing"


def test_failing_trial_is_recorded_and_study_goes_on(tmp_path):
    from mlflow.tracking import MlflowClient

    data = tmp_path / "data" / "qqp"
    data.mkdir(parents=True)
    shutil.copy(FIXTURES / "qqp" / "dev.tsv", data / "dev.tsv")
    (data / "train.tsv").write_text("this is not\ta QQP file\nat all\n")  # two columns, no label

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="failing", num_samples=3, max_concurrent_trials=2, target_tasks=["synthetic_xnli"],
               intermediate_tasks=["none", "qqp"], data_dir=str(tmp_path / "data"),
               search_space={"intermediate_lr": {"type": "choice", "values": [0.001]},
                             "target_lr": {"type": "choice", "values": [0.001, 0.002]}})
    raw["search"].update(scheduler="fifo", grace_period=1, sampler="random", seed=1)
    raw["training"].update(target_epochs=1, intermediate_epochs=1, max_train_examples=200, max_eval_examples=100)
    raw["resources"].update(max_failures=0)  # a parse error is not a lost worker: no Train retry
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))

    result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--name", NAME],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'xstilts_runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("xstilts")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("xstilts.run_kind") == "study")
    trials = [r for r in runs if r.data.tags.get("xstilts.run_kind") == "trial"]
    assert parent.info.status == "FINISHED"  # the study went on and closed normally
    assert len(trials) == 3 and len({r.data.tags["xstilts.trial_id"] for r in trials}) == 3
    failed = [r for r in trials if r.data.tags["xstilts.intermediate_task"] == "qqp"]
    finished = [r for r in trials if r.data.tags["xstilts.intermediate_task"] == "none"]
    assert failed and finished, [r.data.tags["xstilts.intermediate_task"] for r in trials]
    for run in failed:
        assert run.info.status == "FAILED" and run.info.end_time is not None
        error = run.data.tags["xstilts.error"]
        assert "train.tsv" in error and "expected 3 TAB-separated columns" in error, error
        assert "final/en_dev_score" not in run.data.metrics
        trial_id = run.data.tags["xstilts.trial_id"]
        assert f"trial {trial_id}] FAILED" in result.stdout
    for run in finished:
        assert run.info.status == "FINISHED" and "final/en_dev_score" in run.data.metrics
    # The summary the CLI prints selects among the completed trials only.
    assert "best of" in result.stdout and f"best of {len(finished)} completed" in result.stdout

    # Fix the data; `resume` restarts the errored trials (by default) under the same trial ids.
    shutil.copy(FIXTURES / "qqp" / "train.tsv", data / "train.tsv")
    resumed = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "resume", NAME], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    runs = client.search_runs([experiment.experiment_id])
    trials = {r.data.tags["xstilts.trial_id"]: r for r in runs if r.data.tags.get("xstilts.run_kind") == "trial"}
    assert len(trials) == 3  # the same runs, none added
    for run in failed:
        again = trials[run.data.tags["xstilts.trial_id"]]
        assert again.info.run_id == run.info.run_id
        assert again.info.status == "FINISHED" and "final/en_dev_score" in again.data.metrics
        assert "xstilts.error" not in again.data.tags
        assert again.data.tags["xstilts.attempt"] == "2"
        assert "expected 3 TAB-separated columns" in again.data.tags["xstilts.previous_error"]
