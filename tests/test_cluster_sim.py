"""A study on a multi-node Ray cluster simulated on this machine (`ray.cluster_utils.Cluster`:
one head and two worker raylets), run through the real `xstilts run --address ...`.

Placement is forced across nodes with resources, not hoped for: the head has no CPU and no
TRAIN_DRIVER slot, and each worker node has one TRAIN_DRIVER slot and one CPU, so two concurrent
trials must run their trial processes on two different nodes. Each trial run records the node
it ran on (tag `xstilts.ray_node_id`, xstilts.trainables.trial_run) and Ray's state API records where the
Train workers ran; all trials land in one MLflow store under one parent run.

The same cluster shows the refusal of a local storage path on more than one node; the study
itself then runs with the explicit opt-in XSTILTS_STORAGE_SHARED=1 (every "node" is this one
machine, so its local disk really is shared).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from xstilts.study.config import DEFAULT_CONFIG

pytestmark = pytest.mark.e2e

WORKER_NODES = 2
NAME = "cluster-sim"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # The dashboard (on a free loopback port: other Ray runtimes may share this machine) serves
    # the state API read below.
    sim = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
    workers = [sim.add_node(num_cpus=1, resources={"TRAIN_DRIVER": 1}) for _ in range(WORKER_NODES)]
    sim.wait_for_nodes()
    yield sim, {node.node_id for node in workers}
    ray.shutdown()
    sim.shutdown()


def _write_config(root: Path) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="cluster", num_samples=2, max_concurrent_trials=2, target_tasks=["synthetic_xnli"],
               intermediate_tasks=["none"], search_space={"target_lr": {"type": "choice", "values": [0.001, 0.002]}})
    raw["search"].update(scheduler="fifo", grace_period=1)
    raw["training"].update(target_epochs=1, max_train_examples=200, max_eval_examples=100)
    raw["storage_path"] = str(root / "storage")
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(root: Path, address: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", str(root / "study.yaml"),
                           "--address", address, *extra], cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_local_storage_refused_on_multi_node_cluster(cluster, tmp_path):
    sim, _ = cluster
    _write_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "XSTILTS_STORAGE_SHARED"}
    result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--address",
                             sim.address, "--name", "refused"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert "storage_path" in errors[0] and "XSTILTS_STORAGE_SHARED=1" in errors[0] and "3 nodes" in errors[0]
    # Refused before anything was written: no storage folder, no MLflow store, no run.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_study_spreads_trials_over_nodes_into_one_mlflow(cluster, tmp_path):
    from mlflow.tracking import MlflowClient
    from ray.util.state import list_actors

    sim, worker_node_ids = cluster
    _write_config(tmp_path)
    started = time.time()
    result = _run(tmp_path, sim.address, "--name", NAME, env={"XSTILTS_STORAGE_SHARED": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert time.time() - started < 300

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xstilts")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("xstilts.run_kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("xstilts.run_kind") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 2 and len({r.data.tags["xstilts.trial_id"] for r in trials}) == 2
    for run in trials:  # one store, one parent, complete results
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED", run.data.tags.get("xstilts.error")
        assert {"final/en_dev_score", "final/dev/far/accuracy"} <= set(run.data.metrics)
        assert os.path.isfile(os.path.join(run.data.tags["xstilts.checkpoint"], "config.json"))

    # The trials' processes ran on both worker nodes (never the CPU-less head)...
    trial_nodes = {r.data.tags["xstilts.ray_node_id"] for r in trials}
    assert trial_nodes == worker_node_ids
    # ... and so did their Ray Train workers, as Ray itself recorded them.
    import ray

    ray.init(address=sim.address)
    train_workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=1000)
    assert {actor.node_id for actor in train_workers} == worker_node_ids
