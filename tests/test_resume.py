"""SIGKILL of the study driver mid-study, then `xstilts resume NAME`: the study continues to the
requested number of trials, finished trials are not re-run, and MLflow shows each trial once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from xstilts.study.config import DEFAULT_CONFIG

pytestmark = pytest.mark.e2e
NAME = "resume-me"


def _trial_runs(uri: str):
    db = uri[len("sqlite:///"):]
    if not os.path.exists(db):
        return []
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xstilts")
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]


def test_driver_killed_then_resumed(tmp_path: Path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="resume", num_samples=3, max_concurrent_trials=1, target_tasks=["synthetic_xnli"])
    raw["search"].update(scheduler="fifo")
    raw["training"].update(target_epochs=2, intermediate_epochs=1, max_train_examples=300)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'xstilts_runs' / 'mlflow.db'}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    driver = subprocess.Popen([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--name", NAME],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        tune_dir = tmp_path / "xstilts_runs" / NAME / "tune"
        while time.time() < deadline:  # kill the driver once the first trial has finished
            # Read MLflow only once the driver has created its store (concurrent schema creation fails).
            finished = [r for r in _trial_runs(uri) if r.info.status == "FINISHED"] if tune_dir.exists() else []
            if finished:
                break
            assert driver.poll() is None, "the study ended before it could be killed"
            time.sleep(1)
        assert finished, "no trial finished in time"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    first = {r.data.tags["xstilts.trial_id"]: r for r in finished}
    assert len(_trial_runs(uri)) < 3

    resumed = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "resume", NAME, "--tracking-uri", uri],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming the search of synthetic_xnli" in resumed.stdout

    runs = _trial_runs(uri)
    trial_ids = [r.data.tags["xstilts.trial_id"] for r in runs]
    assert len(trial_ids) == 3 and len(set(trial_ids)) == 3  # the requested number, each once
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert "final/en_dev_score" in run.data.metrics
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "en_dev_score")
        assert sorted(m.step for m in history) == [1, 2]  # every epoch once: none lost, none twice
    for trial_id, before in first.items():  # finished trials were not re-run
        after = next(r for r in runs if r.data.tags["xstilts.trial_id"] == trial_id)
        assert after.info.run_id == before.info.run_id
        assert after.info.end_time == before.info.end_time

    again = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "resume", "no-such-study", "--tracking-uri", uri],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "no-such-study" in again.stderr

    # The wall time sums the sessions: the killed one (up to its last heartbeat, a finished trial)
    # and the resumed one; a no-op resume adds its own seconds and takes none away.
    client = MlflowClient(uri)
    parent = _study_run(client)
    sessions = _sessions(client, parent.info.run_id)
    assert sorted(sessions) == [0, 1] and all(seconds > 0 for seconds in sessions.values())
    assert parent.data.metrics["study_sessions"] == 2
    assert parent.data.metrics["study_wall_seconds"] == pytest.approx(sum(sessions.values()))
    assert parent.data.metrics["study_wall_seconds"] > sessions[1]
    before = parent.data.metrics["study_wall_seconds"]
    noop = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "resume", NAME, "--tracking-uri", uri],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert noop.returncode == 0, noop.stdout[-3000:] + noop.stderr[-3000:]
    parent = _study_run(client)
    sessions = _sessions(client, parent.info.run_id)
    assert sorted(sessions) == [0, 1, 2]
    assert parent.data.metrics["study_wall_seconds"] == pytest.approx(before + sessions[2])
    assert len(_trial_runs(uri)) == 3  # nothing re-ran


def _study_run(client: MlflowClient):
    experiment = client.get_experiment_by_name("xstilts")
    (parent,) = [r for r in client.search_runs([experiment.experiment_id])
                 if r.data.tags.get("xstilts.run_kind") == "study"]
    return parent


def _sessions(client: MlflowClient, run_id: str) -> dict[int, float]:
    """{session index: its seconds, as last logged}."""
    latest: dict[int, tuple] = {}
    for point in client.get_metric_history(run_id, "study_session_seconds"):
        if point.step not in latest or (point.timestamp, point.value) > latest[point.step]:
            latest[point.step] = (point.timestamp, point.value)
    return {step: value for step, (_, value) in latest.items()}


def test_wall_time_sums_sessions_in_a_real_store(tmp_path: Path):
    """xstilts.study.study_run against a real sqlite MLflow store, as `run`, a SIGKILLed `resume` (only its
    heartbeat on record) and another `resume` leave it; the report reads the sum."""
    from xstilts.analysis.records import find_study
    from xstilts.analysis.run_stats import run_json, run_table, RunStats
    from xstilts.study.study_run import begin_study_session, finish_study_run, start_study_run
    from xstilts.tasks.record_schema import TAG_KIND, TAG_STUDY

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("xstilts")
    run_id = start_study_run(uri, experiment_id, "walls", {"model": "m"}, "name: walls\n")

    first = begin_study_session(uri, run_id, started=time.time() - 114)
    assert (first.index, first.previous_seconds) == (0, 0.0)
    finish_study_run(uri, run_id, "KILLED", 114.0, session=first)
    assert client.get_run(run_id).data.metrics["study_wall_seconds"] == 114.0

    second = begin_study_session(uri, run_id, started=time.time() - 17)  # a no-op resume
    assert (second.index, second.previous_seconds) == (1, 114.0)
    finish_study_run(uri, run_id, "FINISHED", 17.0, session=second)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["study_wall_seconds"] == 131.0 and metrics["study_sessions"] == 2

    killed = begin_study_session(uri, run_id, started=time.time() - 40)  # SIGKILLed: no finish
    killed.heartbeat(force=True, wait=True)
    third = begin_study_session(uri, run_id)
    assert third.index == 3 and third.previous_seconds == pytest.approx(131.0 + 40, abs=5)
    finish_study_run(uri, run_id, "FINISHED", 9.0, session=third)

    study = find_study(uri, "xstilts", "walls")
    assert study.metrics["study_wall_seconds"] == pytest.approx(131.0 + 40 + 9, abs=5)
    assert study.metrics["study_sessions"] == 4
    rows = {row[0]: row[1] for row in run_table(RunStats(), study).rows}
    assert rows["study wall time"].endswith("(4 sessions)")
    assert run_json(RunStats(), study)["study_sessions"] == 4

    # A study recorded before sessions were (one wall-time number): that number is session 0.
    legacy = client.create_run(experiment_id, tags={TAG_KIND: "study", TAG_STUDY: "legacy"}).info.run_id
    client.log_metric(legacy, "study_wall_seconds", 114.0)
    resumed = begin_study_session(uri, legacy)
    assert (resumed.index, resumed.previous_seconds) == (1, 114.0)
    finish_study_run(uri, legacy, "FINISHED", 17.0, session=resumed)
    assert client.get_run(legacy).data.metrics["study_wall_seconds"] == 131.0


def test_sigterm_stops_the_whole_study_and_leaves_it_resumable(tmp_path: Path):
    """`kill` (or a scheduler's SIGTERM) is Ctrl-C: the study stops, its MLflow run is KILLED (not
    left RUNNING), and the message says how to resume."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="term", num_samples=2, max_concurrent_trials=1, target_tasks=["synthetic_xnli", "synthetic_panx"])
    raw["training"].update(target_epochs=2, intermediate_epochs=1, max_train_examples=300)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'xstilts_runs' / 'mlflow.db'}"
    driver = subprocess.Popen([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--name", "term-me"],
                              cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        tune_dir = tmp_path / "xstilts_runs" / "term-me" / "tune"
        while time.time() < deadline and not (tune_dir.exists() and _trial_runs(uri)):  # a trial is running
            assert driver.poll() is None, "the study ended before it could be stopped"
            time.sleep(1)
        assert _trial_runs(uri), "no trial started in time"
        driver.send_signal(signal.SIGTERM)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, stderr[-3000:]
    assert "interrupted; continue with: xstilts resume term-me" in stderr
    assert "--- target task synthetic_panx" not in stdout  # the next target's search did not start
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xstilts")
    parents = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("xstilts.run_kind") == "study"]
    assert [p.info.status for p in parents] == ["KILLED"]
    assert "study_wall_seconds" in parents[0].data.metrics
