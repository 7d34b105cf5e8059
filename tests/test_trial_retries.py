"""Two kinds of retry, kept apart (docs/cluster.md, "Retries").

`resources.max_failures` is Ray Train's: a lost worker is restarted inside the trial.
`resources.trial_max_failures` is Ray Tune's: a trial whose function failed runs again. This test
turns Train's retries off and Tune's on, SIGKILLs the phase-3 training worker after its first
epoch, and checks that Tune ran the trial again under the same trial id and MLflow run, that its
Ray Train run resumed from its last registered checkpoint (not from scratch), and that the run finished
with the attempt counted and the first attempt's error kept.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from xstilts.study.config import DEFAULT_CONFIG

pytestmark = pytest.mark.e2e

NAME = "retries"


def _records(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _epoch_registered(train_runs) -> bool:
    """Whether Ray Train's controller has registered a phase-3 checkpoint (its snapshot lists
    it): a worker's report is uploaded at once but registered at the controller's next poll, and
    a worker killed in between leaves a checkpoint no restart knows of."""
    for snapshot in train_runs.glob("*-target/checkpoint_manager_snapshot.json"):
        if "checkpoint_" in snapshot.read_text():
            return True
    return False


def _kill_after_first_target_epoch(progress_file, train_runs, done: threading.Event, killed: list) -> None:
    while not done.is_set():
        for record in _records(progress_file):
            if (record["event"] == "epoch" and record.get("phase") == "target" and record["epoch"] == 1
                    and _epoch_registered(train_runs)):
                os.kill(record["pid"], signal.SIGKILL)
                killed.append(record["pid"])
                return
        time.sleep(0.05)


def test_tune_retries_a_failed_trial_in_its_own_run(tmp_path):
    from mlflow.tracking import MlflowClient

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name=NAME, num_samples=1, max_concurrent_trials=1, target_tasks=["synthetic_xnli"],
               intermediate_tasks=["none"], search_space={"intermediate_lr": {"type": "choice", "values": [0.001]},
                                                          "target_lr": {"type": "choice", "values": [0.001]}})
    raw["search"].update(scheduler="fifo", sampler="random", seed=1)
    raw["training"].update(target_epochs=3, max_train_examples=200, max_eval_examples=60)
    raw["resources"].update(max_failures=0, trial_max_failures=1)  # no Train retry; one Tune retry
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    progress = tmp_path / "progress.jsonl"

    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_after_first_target_epoch, args=(progress, tmp_path / 'xstilts_runs' / NAME / 'train_runs', done, killed), daemon=True)
    killer.start()
    try:
        result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--name", NAME],
                                cwd=tmp_path, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "XSTILTS_PROGRESS_FILE": str(progress)})
    finally:
        done.set()
    assert killed, "the phase-3 worker was never seen reporting epoch 1"
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    starts = [r for r in _records(progress) if r["event"] == "start" and r["phase"] == "target"]
    assert len(starts) == 2 and starts[0]["start_epoch"] == 0, starts
    resumed_at = starts[1]["start_epoch"]  # after the last registered epoch (1, or 2 if the kill was late)
    assert resumed_at >= 1, starts
    retried = [r["epoch"] for r in _records(progress)
               if r["event"] == "epoch" and r["phase"] == "target" and r["pid"] == starts[1]["pid"]]
    assert retried == list(range(resumed_at + 1, 4)), retried

    client = MlflowClient(f"sqlite:///{tmp_path / 'xstilts_runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("xstilts")
    trials = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("xstilts.run_kind") == "trial"]
    assert len(trials) == 1  # the retry logged into the same run
    run = trials[0]
    assert run.info.status == "FINISHED" and "final/en_dev_score" in run.data.metrics
    assert run.data.tags["xstilts.attempt"] == "2" and "xstilts.error" not in run.data.tags
    assert run.data.tags["xstilts.previous_error"]  # why the first attempt ended (the lost worker)
    # Every epoch is in MLflow once, the one redone after the kill included.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "target_epoch")] == [1, 2, 3]
    # Bounded disk: the run keeps one checkpoint (the last, holding the best epoch's weights);
    # one the killed worker uploaded but Train never registered is removed too.
    run_folders = list((tmp_path / "xstilts_runs" / NAME / "train_runs").glob("*-target"))
    assert len(run_folders) == 1
    checkpoints = [p for p in run_folders[0].iterdir() if p.is_dir() and p.name.startswith("checkpoint_")]
    assert len(checkpoints) == 1, sorted(p.name for p in run_folders[0].iterdir())
