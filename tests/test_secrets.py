"""No credential from the environment ends up in what a study records, and the services a study
starts listen on loopback only.

A real tiny study runs with fake secrets planted in its environment (the cloud keys, MLflow and
HF tokens a cluster node typically has, plus a random variable of our own); every Ray worker
inherits that environment. Then every record is searched for their values: each MLflow run's
name, params, tags and metric keys, every artifact's content, the raw bytes of the MLflow sqlite
file, and every file under the storage path (Tune's params.json/result.json and experiment
state, Ray Train checkpoints, the phase cache).
"""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xstilts.study.config import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[1]
NAME = "secrets"


def _planted() -> dict[str, str]:
    token = secrets.token_hex(12)
    return {
        "AWS_ACCESS_KEY_ID": f"AKIAFAKE{token[:12].upper()}",
        "AWS_SECRET_ACCESS_KEY": f"fake-aws-secret-{token}",
        "AWS_SESSION_TOKEN": f"fake-aws-session-{token}",
        "MLFLOW_TRACKING_PASSWORD": f"fake-mlflow-password-{token}",
        "MLFLOW_TRACKING_USERNAME": f"fake-mlflow-user-{token}",
        "HF_TOKEN": f"hf_fake{token}",
        "HUGGING_FACE_HUB_TOKEN": f"hf_fakehub{token}",
        "XSTILTS_TEST_SECRET": secrets.token_urlsafe(24),
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("secrets")
    planted = _planted()
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="secrets", num_samples=2, max_concurrent_trials=2, target_tasks=["synthetic_xnli"],
               intermediate_tasks=["none", "synthetic_mnli"],
               search_space={"intermediate_lr": {"type": "choice", "values": [0.001]},
                             "target_lr": {"type": "choice", "values": [0.001, 0.002]}})
    raw["search"].update(scheduler="fifo", grace_period=1)
    raw["training"].update(target_epochs=1, intermediate_epochs=1, max_train_examples=200, max_eval_examples=100)
    (root / "study.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--name", NAME],
                            cwd=root, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **planted})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, planted, result


def _found_in(text: str, planted: dict[str, str]) -> list[str]:
    return [name for name, value in planted.items() if value in text]


@pytest.mark.e2e
def test_no_planted_secret_in_mlflow_records(study, tmp_path):
    from mlflow.tracking import MlflowClient

    root, planted, _ = study
    client = MlflowClient(f"sqlite:///{root / 'xstilts_runs' / 'mlflow.db'}")
    leaks: list[str] = []
    searched = {"runs": 0, "artifacts": 0}
    for experiment in client.search_experiments():
        leaks += [f"experiment {experiment.name}: {n}" for n in
                  _found_in(repr((experiment.name, experiment.tags, experiment.artifact_location)), planted)]
        for run in client.search_runs([experiment.experiment_id]):
            searched["runs"] += 1
            record = repr((run.info.run_name, run.data.params, run.data.tags, sorted(run.data.metrics)))
            leaks += [f"run {run.info.run_name}: {n}" for n in _found_in(record, planted)]
            folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
            for path in (p for p in folder.rglob("*") if p.is_file()):
                searched["artifacts"] += 1
                leaks += [f"artifact {path.name} of {run.info.run_name}: {n}"
                          for n in _found_in(path.read_bytes().decode("latin-1"), planted)]
    assert searched["runs"] == 3 and searched["artifacts"] >= 1  # the parent (+ its config) and 2 trials
    assert not leaks, leaks


@pytest.mark.e2e
def test_no_planted_secret_in_any_file_the_study_wrote(study):
    """Raw bytes of everything under the study's folder: the MLflow sqlite file, artifacts, Tune's
    params.json/result.json/experiment state, checkpoints, caches."""
    root, planted, _ = study
    files = [p for p in (root / "xstilts_runs").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"mlflow.db", "params.json", "result.json", "study_config.yaml"} <= names
    leaks = [f"{path.relative_to(root)}: {n}" for path in files
             for n in _found_in(path.read_bytes().decode("latin-1"), planted)]
    assert not leaks, leaks


@pytest.mark.e2e
def test_study_output_shows_no_secret_and_dashboard_on_loopback(study):
    _, planted, result = study
    assert not _found_in(result.stdout + result.stderr, planted)
    # The local Ray a study starts serves its dashboard on loopback only (xstilts.study.runner._start_ray).
    urls = re.findall(r"dashboard at \S*?https?://([^:/\s\x1b]+):(\d+)", result.stdout + result.stderr)
    assert urls and all(host == "127.0.0.1" for host, _ in urls), urls


def test_cluster_yaml_binds_nothing_public():
    """The cluster's dashboard is on loopback (SSH tunnel) and MLflow on the head's private IP,
    never on every interface (tests/test_cluster_yaml.py checks the details)."""
    text = yaml.safe_dump(yaml.safe_load((REPO / "cluster.yaml").read_text()), width=10**6)  # no comments
    assert "--dashboard-host=127.0.0.1" in text
    hosts = re.findall(r"mlflow server --host (\S+)", text)
    assert hosts == ['"$XSTILTS_HEAD_IP"'], hosts
    assert not re.search(r"(?<![\d.])0\.0\.0\.0(?![\d.])", text)
