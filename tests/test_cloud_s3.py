"""The cloud path on one machine, with real components only: a real S3-compatible server
(SeaweedFS) on loopback, a real `mlflow server` whose artifacts go to the same bucket, and a
multi-node Ray (`ray.cluster_utils.Cluster`) whose nodes share nothing but that bucket: each
node has its own temporary directory (TMPDIR of its raylet, inherited by its workers), and the
driver runs in a folder where nothing of the study may appear.

Placement is forced across nodes with resources: the head has no CPU and no TRAIN_DRIVER slot,
each worker node one of each, so the two trials that run at once run on two different nodes.
The study's Optuna random sampler (seed 2) draws the same intermediate task for the first two
trials of each target, so two trials on different nodes need the same phase 2 at the same
moment (checked below from the records, not assumed).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from xstilts.study.config import DEFAULT_CONFIG

pytestmark = pytest.mark.e2e

BUCKET = "xstilts-e2e"
STORAGE = f"s3://{BUCKET}/studies"
LEASE_TTL_S = "8"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _MlflowServer:
    """A real tracking server (sqlite backend); clients write artifacts straight to the bucket."""

    def __init__(self, root: Path, env: dict):
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        log = open(root / "mlflow-server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--no-serve-artifacts",
             "--default-artifact-root", f"s3://{BUCKET}/mlflow-default"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.time() + 90
        while time.time() < deadline:
            assert self.process.poll() is None, (root / "mlflow-server.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    def stop(self):
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

    from xstilts.study.rehearsal import LocalS3Server

    root = tmp_path_factory.mktemp("cloud")
    patch = pytest.MonkeyPatch()
    with LocalS3Server(root / "s3") as s3:
        s3.create_bucket(BUCKET)
        # The credentials and endpoint every node's processes read (as an instance profile and
        # AWS_ENDPOINT_URL would provide them on a real cluster); set before the nodes start.
        for key, value in {**s3.env, "XSTILTS_LEASE_TTL_S": LEASE_TTL_S, "HF_HUB_OFFLINE": "1"}.items():
            patch.setenv(key, value)
        mlflow = _MlflowServer(root, s3.env)
        node_tmp = {}
        sim = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
        workers = []
        for index in range(2):
            folder = root / f"node{index}-tmp"
            folder.mkdir()
            node = sim.add_node(num_cpus=1, resources={"TRAIN_DRIVER": 1}, env_vars={"TMPDIR": str(folder)})
            node_tmp[node.node_id] = folder
            workers.append(node)
        sim.wait_for_nodes()
        try:
            yield {"s3": s3, "mlflow": mlflow, "sim": sim, "node_tmp": node_tmp, "root": root}
        finally:
            ray.shutdown()
            sim.shutdown()
            mlflow.stop()
            patch.undo()


def _write_config(folder: Path, name: str, intermediate_lr: float, targets: list[str], samples: int) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name=name, num_samples=samples, max_concurrent_trials=2, target_tasks=targets,
               intermediate_tasks=["synthetic_mnli", "synthetic_qqp"], storage_path=STORAGE,
               search_space={"intermediate_lr": {"type": "choice", "values": [intermediate_lr]},
                             "target_lr": {"type": "choice", "values": [0.001, 0.003]}})
    raw["search"].update(sampler="random", seed=2, scheduler="fifo", grace_period=1, baseline_first=False,
                         each_intermediate_first=False)
    raw["training"].update(intermediate_epochs=1, target_epochs=1, max_train_examples=200, max_eval_examples=80)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli(folder: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xstilts.study.cli", *args], cwd=folder, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def _trial_runs(uri: str, study: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xstilts")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`xstilts.study` = '{study}'")
    return [r for r in runs if r.data.tags.get("xstilts.run_kind") == "trial"], \
        [r for r in runs if r.data.tags.get("xstilts.run_kind") == "study"]


def _phase2_counts(trials) -> tuple[int, int]:
    """(phase-2 trainings, distinct phase-2 configurations) as the trials recorded them."""
    keys = [r.data.tags["xstilts.phase_cache_key"] for r in trials]
    misses = [r for r in trials if r.data.tags["xstilts.phase_cache"] == "miss"]
    return len(misses), len(set(keys))


def _bucket_files(prefix: str) -> dict[str, int]:
    from xstilts.storage import Location

    return Location(f"s3://{BUCKET}/{prefix}").files()


def test_study_on_object_storage_across_nodes(cloud, tmp_path):
    from mlflow.tracking import MlflowClient

    from xstilts.trainables.leases import ACTOR_NAMESPACE, actor_name

    uri, sim = cloud["mlflow"].uri, cloud["sim"]
    _write_config(tmp_path, "cloud", 0.001, ["synthetic_xnli", "synthetic_panx"], samples=3)
    started = time.time()
    result = _cli(tmp_path, "run", "--config", "study.yaml", "--address", sim.address, "--name", "cloud",
                  "--tracking-uri", uri)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"study on S3 across 2 nodes: {time.time() - started:.0f}s")

    trials, parents = _trial_runs(uri, "cloud")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 6 and all(r.info.status == "FINISHED" for r in trials), \
        [(r.info.status, r.data.tags.get("xstilts.error")) for r in trials]
    assert {r.data.tags["xstilts.intermediate_task"] for r in trials} == {"synthetic_mnli", "synthetic_qqp"}
    assert {r.data.tags["xstilts.target_task"] for r in trials} == {"synthetic_xnli", "synthetic_panx"}
    assert len({r.data.tags["xstilts.ray_node_id"] for r in trials}) == 2  # both worker nodes ran trials

    # Phase 2 trained exactly once per distinct configuration...
    trainings, distinct = _phase2_counts(trials)
    assert trainings / distinct == 1.00, (trainings, distinct)
    # ... even when two trials on different nodes needed the same one at the same moment: for each
    # target, its first two trials share a key, run on two nodes, and started within the time the
    # phase-2 training took (the second waited on the lease, then hit).
    contended = 0
    for target in ("synthetic_xnli", "synthetic_panx"):
        first_two = sorted((r for r in trials if r.data.tags["xstilts.target_task"] == target),
                           key=lambda r: r.info.start_time)[:2]
        keys = {r.data.tags["xstilts.phase_cache_key"] for r in first_two}
        nodes = {r.data.tags["xstilts.ray_node_id"] for r in first_two}
        if len(keys) == 1 and len(nodes) == 2:
            trainer = [r for r in first_two if r.data.tags["xstilts.phase_cache"] == "miss"]
            if trainer:
                manifest = json.loads(_read(f"studies/phase_cache/{keys.pop()}/xstilts_cache_manifest.json"))
                gap = abs(first_two[0].info.start_time - first_two[1].info.start_time) / 1000
                assert gap < manifest["metadata"]["seconds"], (gap, manifest["metadata"]["seconds"])
                contended += 1
    assert contended >= 1
    # The arbiter granted each key's lease once (nobody waited out a lease and trained again).
    import ray

    ray.init(address=sim.address, namespace=ACTOR_NAMESPACE)
    try:
        leases = ray.get_actor(actor_name(f"{STORAGE}/phase_cache"), namespace=ACTOR_NAMESPACE)
        grants = ray.get(leases.grant_log.remote())
    finally:
        ray.shutdown()
    assert len(grants) == distinct and len({key for key, _ in grants}) == distinct

    # Everything the study wrote is in the bucket: phase cache entries (manifest last), the
    # embedded model, Tune's state, the Train checkpoints and MLflow's artifacts.
    files = _bucket_files("studies")
    for key in {r.data.tags["xstilts.phase_cache_key"] for r in trials}:
        assert f"phase_cache/{key}/xstilts_cache_manifest.json" in files
        assert f"phase_cache/{key}/model.safetensors" in files
    assert any(name.startswith("embedded_models/") and name.endswith("config.json") for name in files)
    assert any(name.startswith("cloud/tune/synthetic_xnli/") for name in files)
    assert any(name.startswith("cloud/train_runs/") for name in files)
    assert any(name.startswith("feature_cache/") and name.endswith(".npz") for name in files)
    for run in trials:
        assert run.data.tags["xstilts.checkpoint"].startswith(f"s3://{BUCKET}/studies/cloud/train_runs/")
    artifacts = MlflowClient(uri).list_artifacts(parents[0].info.run_id)
    assert "study_config.yaml" in {a.path for a in artifacts}
    assert any(name.endswith("study_config.yaml") for name in _bucket_files("studies/mlflow-artifacts"))

    # analyze, export (reading the checkpoint from S3), the registry alias, report.
    analyzed = _cli(tmp_path, "analyze", "--study", "cloud", "--tracking-uri", uri, "--json")
    assert analyzed.returncode == 0, analyzed.stderr
    best = json.loads(analyzed.stdout)["best"]
    assert set(best) == {"synthetic_xnli", "synthetic_panx"}
    exported = _cli(tmp_path, "export", "--study", "cloud", "--target", "synthetic_xnli", "--out", "exported",
                    "--tracking-uri", uri)
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-2000:]
    assert (tmp_path / "exported" / "config.json").is_file()
    selection = json.loads((tmp_path / "exported" / "xstilts_selection.json").read_text())
    assert selection["source_checkpoint"].startswith("s3://")
    version = MlflowClient(uri, registry_uri=uri).get_model_version_by_alias("xstilts", "synthetic_xnli-best")
    assert version.source
    fetched = _cli(tmp_path, "export", "--from-registry", "--target", "synthetic_xnli", "--out", "fetched",
                   "--tracking-uri", uri)  # the registered copy, downloaded from the bucket
    assert fetched.returncode == 0, fetched.stdout[-2000:] + fetched.stderr[-2000:]
    assert (tmp_path / "fetched" / "config.json").is_file()
    assert any(name.endswith("xstilts_model/config.json") for name in _bucket_files("studies/mlflow-artifacts"))
    reported = _cli(tmp_path, "report", "--study", "cloud", "--out", "report", "--tracking-uri", uri)
    assert reported.returncode == 0, reported.stderr[-2000:]
    assert (tmp_path / "report" / "report.md").is_file()

    # No node's disk holds study data outside its temporary caches, and the driver's folder
    # holds only what the user asked for (no `s3:` folder, no xstilts_runs).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "fetched", "report", "study.yaml"]
    for folder in cloud["node_tmp"].values():
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".safetensors", ".npz", ".pt", ".json"):
                assert path.relative_to(folder).parts[0].startswith("xstilts-node-cache"), path


def _read(prefix: str) -> str:
    from xstilts.storage import Location

    return Location(f"s3://{BUCKET}/{prefix}").read_text()


def test_killed_driver_resumes_on_object_storage(cloud, tmp_path):
    """SIGKILL of `xstilts run` mid-study, then `xstilts resume`: the study completes, with no
    duplicate MLflow run and no phase-2 configuration trained twice."""
    uri, sim = cloud["mlflow"].uri, cloud["sim"]
    _write_config(tmp_path, "killed", 0.002, ["synthetic_xnli"], samples=3)
    driver = subprocess.Popen([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--address",
                               sim.address, "--name", "killed", "--tracking-uri", uri], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(driver.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.time() + 300
    while not any("started" in line for line in out) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    time.sleep(4)  # phase 2 is training on one node, its twin waits for the lease on the other
    assert driver.poll() is None, "".join(out)[-3000:]
    driver.kill()
    driver.wait(timeout=60)
    before, _ = _trial_runs(uri, "killed")
    assert any(r.info.status == "RUNNING" for r in before), [r.info.status for r in before]  # killed mid-study

    resumed = _cli(tmp_path, "resume", "killed", "--address", sim.address, "--tracking-uri", uri)
    assert resumed.returncode == 0, "".join(out)[-2000:] + resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials, parents = _trial_runs(uri, "killed")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    ids = [r.data.tags["xstilts.trial_id"] for r in trials]
    assert len(ids) == len(set(ids)) == 3, ids  # no duplicate MLflow runs
    assert all(r.info.status == "FINISHED" for r in trials), [r.data.tags.get("xstilts.error") for r in trials]
    trainings, distinct = _phase2_counts(trials)
    assert trainings == distinct, [(r.data.tags["xstilts.trial_id"], r.data.tags.get("xstilts.phase_cache"),
                                    r.data.tags.get("xstilts.phase_cache_rebuilt")) for r in trials]
    # One phase-2 Ray Train run per configuration (named by its cache key): the resumed trial
    # continued the killed trainer's run instead of starting a second one.
    runs = {name.split("/")[0] for name in _bucket_files("studies/killed/train_runs") if name.startswith("intermediate-")}
    assert len(runs) == distinct, runs


def test_phase_cache_leases_on_object_storage(cloud):
    """Real Ray tasks on two nodes against the real bucket: one builds, the other waits and hits;
    a builder killed mid-build loses its lease after the TTL and the other takes over; a
    corrupted entry is detected, rebuilt and the rebuild reported."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    sim = cloud["sim"]
    # The tasks below are this module's functions: ship them by value (workers cannot import tests/).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    root = f"s3://{BUCKET}/lease-test/phase_cache"
    nodes = list(cloud["node_tmp"])
    ray.init(address=sim.address)
    try:
        def on(node_id):
            # No CPU asked: pinned by node, they never wait behind the CPUs trials of earlier tests hold.
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False), "num_cpus": 0}

        first = ray.remote(_get_or_build).options(**on(nodes[0])).remote(root, "k1", 3.0, "a")
        time.sleep(0.5)
        second = ray.remote(_get_or_build).options(**on(nodes[1])).remote(root, "k1", 3.0, "b")
        results = ray.get([first, second], timeout=300)
        assert sorted(r["hit"] for r in results) == [False, True]
        # Whichever got the lease first built it (under load the second task may start first);
        # both use that one entry.
        builder = next(r for r in results if not r["hit"])
        assert {r["by"] for r in results} == {builder["by"]}
        assert results[0]["node"] != results[1]["node"]

        # A builder dies holding the lease: another trial takes over once the lease lapses.
        from xstilts.trainables.leases import lease_actor

        arbiter = lease_actor(root)
        doomed = ray.remote(_get_or_build).options(**on(nodes[0]), max_retries=0).remote(root, "k2", 120.0, "dead")
        deadline = time.time() + 120
        while ray.get(arbiter.holder.remote("k2")) is None:  # until the doomed builder holds the lease
            assert time.time() < deadline, "the doomed builder never took the lease"
            time.sleep(0.2)
        dead_holder = ray.get(arbiter.holder.remote("k2"))
        ray.cancel(doomed, force=True)  # killed mid-build: its renewals stop
        started = time.time()
        taker = ray.get(ray.remote(_get_or_build).options(**on(nodes[1])).remote(root, "k2", 0.1, "taker"), timeout=180)
        waited = time.time() - started
        assert taker["hit"] is False and taker["by"] == "taker"
        assert waited >= float(LEASE_TTL_S) - 4  # it waited for the dead holder's lease to lapse...
        assert waited < float(LEASE_TTL_S) + 60  # ...and no longer (plus task start-up on a loaded machine)
        grants = [holder for key, holder in ray.get(arbiter.grant_log.remote()) if key == "k2"]
        assert grants[0] == dead_holder and len(grants) == 2

        # A corrupted entry (a file's bytes changed, same size) is detected by the next node that
        # reads it (copies verified earlier stay valid where they are), removed and rebuilt.
        from xstilts.storage import Location

        Location(f"{root}/k1/model.safetensors").write_bytes(b"X" * len(_WEIGHTS))
        fresh = str(cloud["node_tmp"][nodes[1]] / "xstilts-node-cache-fresh")
        rebuilt = ray.get(ray.remote(_get_or_build).options(**on(nodes[1])).remote(root, "k1", 0.1, "c", fresh),
                          timeout=120)
        assert rebuilt["hit"] is False and rebuilt["by"] == "c"
        assert any("corrupt" in event for event in rebuilt["events"]), rebuilt["events"]
        # A partial entry (files, no manifest: its writer died mid-upload) is removed and rebuilt.
        Location(f"{root}/k1/xstilts_cache_manifest.json").delete()
        partial = ray.get(ray.remote(_get_or_build).options(**on(nodes[0])).remote(root, "k1", 0.1, "d"), timeout=120)
        assert partial["hit"] is False and any("partial" in e for e in partial["events"]), partial["events"]
    finally:
        ray.shutdown()


_WEIGHTS = b"w" * 4096


def _get_or_build(root: str, key: str, seconds: float, by: str, node_cache: str | None = None) -> dict:
    """One trial's view of the phase cache (runs as a Ray task on a chosen node); `node_cache`:
    a fresh node-local download cache (a new node that has never read the entry)."""
    import tempfile

    import ray

    if node_cache:
        os.environ["XSTILTS_NODE_CACHE"] = node_cache
    else:
        os.environ.pop("XSTILTS_NODE_CACHE", None)

    from xstilts.trainables.leases import LeaseClient, lease_actor
    from xstilts.trainables.phase_cache import PhaseCache

    events: list[str] = []
    cache = PhaseCache(root, leases=LeaseClient(lease_actor(root)), on_event=events.append)

    def build(store):
        time.sleep(seconds)
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "config.json").write_text(json.dumps({"by": by}))
            Path(folder, "model.safetensors").write_bytes(_WEIGHTS)
            return store(folder, {"by": by})

    manifest, hit = cache.get_or_build(key, build, poll_seconds=0.5)
    local = cache.fetch(key)
    assert json.loads(Path(local, "config.json").read_text())["by"] == manifest["metadata"]["by"]
    return {"hit": hit, "by": manifest["metadata"]["by"], "events": events,
            "node": ray.get_runtime_context().get_node_id()}


@pytest.mark.parametrize("case", ["wrong credentials", "missing bucket"])
def test_bad_object_storage_is_refused_before_anything_starts(cloud, tmp_path, case):
    """One line naming storage_path and the fix, exit 2; no MLflow store, run or folder."""
    config = _write_config(tmp_path, "refused", 0.001, ["synthetic_xnli"], samples=1)
    raw = yaml.safe_load(config.read_text())
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = dict(os.environ)
    if case == "wrong credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    else:
        raw["storage_path"] = "s3://no-such-bucket-xstilts/studies"
    config.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "storage_path" in lines[0], result.stderr
    assert ("AWS_ACCESS_KEY_ID" in lines[0]) if case == "wrong credentials" else ("does not exist" in lines[0])
    assert env["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
