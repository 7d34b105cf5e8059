"""The MLflow tracking server goes away for ~30 s in the middle of a study, for real: a
`mlflow server` process on 127.0.0.1 (sqlite store, served artifacts) has its process group
SIGKILLed while trials are training, and is started again on the same port and store.

The study must finish (exit 0) and lose nothing: every trial has exactly one run, FINISHED, with
every epoch's metrics once and its final metrics; the parent run is closed. And the outage was
really hit: the trials' own logs (Ray's session logs, kept in a private RAY_TMPDIR) show their
MLflow calls refused and retried while the server was down.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from xstilts.study.config import DEFAULT_CONFIG

pytestmark = pytest.mark.e2e

OUTAGE_S = 30
TRIALS, EPOCHS = 3, 3
NAME = "outage"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` in its own process group (its workers die with it)."""

    def __init__(self, root: Path, port: int):
        self.root, self.port, self.process = root, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 120) -> None:
        log = open(self.root / "mlflow-server.log", "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, (self.root / "mlflow-server.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not come up")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def server(tmp_path):
    running = MlflowServer(tmp_path / "mlflow", _free_port())
    running.root.mkdir()
    running.start()
    yield running
    running.kill()


def test_study_survives_mlflow_server_outage(server, tmp_path):
    from mlflow.tracking import MlflowClient

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="outage", num_samples=TRIALS, max_concurrent_trials=2, target_tasks=["synthetic_xnli"],
               intermediate_tasks=["none"], search_space={"target_lr": {"type": "choice", "values": [0.001, 0.002]}})
    raw["search"].update(scheduler="fifo", grace_period=1)
    raw["training"].update(target_epochs=EPOCHS, max_train_examples=200, max_eval_examples=100)
    raw["mlflow"]["tracking_uri"] = server.uri
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))

    # Short: Ray puts unix sockets under it (a path of at most 107 bytes).
    ray_tmp = tempfile.mkdtemp(prefix="/tmp/xo")
    driver = subprocess.Popen([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--name", NAME],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": ray_tmp})
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=s, d=d: d.extend(iter(s.readline, "")), daemon=True)
               for s, d in ((driver.stdout, out), (driver.stderr, err))]
    for reader in readers:
        reader.start()
    try:
        deadline = time.time() + 400
        # Pull the plug once the first epoch is reported: trials are training and logging.
        while not any(" epoch 1/" in line for line in out):
            assert driver.poll() is None, "".join(out)[-3000:] + "".join(err)[-3000:]
            assert time.time() < deadline, "no epoch reported in time"
            time.sleep(0.2)
        server.kill()
        time.sleep(OUTAGE_S)
        assert driver.poll() is None, "the study ended while the server was down:\n" + "".join(err)[-3000:]
        server.start()
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
        for reader in readers:
            reader.join(timeout=5)
    stdout, stderr = "".join(out), "".join(err)
    refused, warned = _outage_evidence(Path(ray_tmp), stderr)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert driver.returncode == 0, stdout[-3000:] + stderr[-3000:]
    print(f"calls refused and retried during the outage: {refused}; xstilts retry warnings: {warned}")
    assert refused or warned, "no MLflow call met the outage: the test did not test it"

    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("xstilts")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("xstilts.run_kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("xstilts.run_kind") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "study_wall_seconds" in parents[0].data.metrics
    assert len(trials) == TRIALS and len({r.data.tags["xstilts.trial_id"] for r in trials}) == TRIALS
    for run in trials:
        assert run.info.status == "FINISHED", run.data.tags.get("xstilts.error")
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert {"final/en_dev_score", "final/zero_shot_mean", "final/dev/far/accuracy"} <= set(run.data.metrics)
        for key in ("en_dev_score", "train_loss", "epoch"):  # every epoch, once
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), (key, history)


def _outage_evidence(ray_tmp: Path, driver_stderr: str) -> tuple[int, int]:
    """(lines where MLflow's HTTP layer met a refused connection and retried, lines where
    xstilts.mlflow_store.retry reported an outage), in the driver's stderr and every Ray log."""
    texts = [driver_stderr] + [p.read_text(errors="replace") for p in ray_tmp.rglob("*")
                               if p.is_file() and p.suffix in (".err", ".out", ".log")]
    lines = [line for text in texts for line in text.splitlines()]
    refused = sum("Retrying" in line and "Connection refused" in line for line in lines)
    warned = sum("xstilts: warning: MLflow unreachable" in line for line in lines)
    return refused, warned


def test_call_with_retry_waits_for_a_server_then_gives_up(monkeypatch, capfd):
    """Fast and real: an MlflowClient against a port nobody listens on (MLflow's own HTTP retries
    off), then a server that comes up while the call is being retried."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from xstilts.mlflow_store.retry import call_with_retry, is_transient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(f"http://127.0.0.1:{_free_port()}")
    started = time.time()
    with pytest.raises(MlflowException) as raised:
        call_with_retry(client.search_experiments, what="a test call", deadline_s=4)
    assert is_transient(raised.value) and 2 < time.time() - started < 15
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("xstilts: warning")]
    assert len(warnings) == 2 and "unreachable during a test call" in warnings[0] and "giving up" in warnings[1]

    # A request the server rejects is not retried.
    with pytest.raises(ValueError):
        call_with_retry(lambda: (_ for _ in ()).throw(ValueError("invalid parameter")), deadline_s=30)
    assert time.time() - started < 20


def test_call_with_retry_rides_out_a_restart(tmp_path, monkeypatch, capfd):
    from mlflow.tracking import MlflowClient

    from xstilts.mlflow_store.retry import call_with_retry

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow", _free_port())
    starter = threading.Timer(3, server.start)
    starter.start()
    try:
        experiments = call_with_retry(MlflowClient(server.uri).search_experiments, what="a test call", deadline_s=120)
    finally:
        starter.join()
        server.kill()
    assert [e.name for e in experiments] == ["Default"]
    err = capfd.readouterr().err
    assert "MLflow unreachable during a test call" in err and "MLflow reachable again" in err
