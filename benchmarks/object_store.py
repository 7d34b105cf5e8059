"""The cloud path's costs, measured on this machine with real components: phase-cache publish and
fetch on a local S3 server (SeaweedFS) vs a local disk, and the autoscaler's scale-up time.

    python benchmarks/object_store.py                  # quick: 32 MB entry x 3 repeats, one scale-up
    python benchmarks/object_store.py --size-mb 512 --repeats 5 --scale-ups 3

Phase cache (xstilts.trainables.phase_cache.PhaseCache, the code trials run): the same entry (a folder
of `--size-mb` MB of incompressible weights plus a config, the shape of a phase-2 encoder) is
  published  `store()`: checksums, then the files, then the manifest (S3: uploads; disk: a copy
             into a staging folder renamed into place)
  fetched    `fetch()` on a node that has never read it: manifest + sizes verified, then (S3) a
             download into the node's temporary cache, every file's SHA-256 checked
`--repeats` times each, alternating S3 and disk in one run (the machine's noise hits both);
medians and the S3/disk ratio. The S3 server and the disk are the same local SSD, so the ratio
is the protocol's cost (HTTP, multipart, verification), not a network's.

Scale-up (xstilts.study.rehearsal.FakeAutoscalingCluster, Ray's fake multi-node autoscaler, 0 worker
nodes at the start): `xstilts run --address ...` of a 1-trial study (embedded default, target
synthetic_xnli, no intermediate, storage on the S3 server) is submitted; measured from the
submission to (a) the first worker node alive and (b) the first trial running (Tune's trial-start
event, printed by the study as `started:`: the trial's actor got resources that only a launched
node has); then to the study's end and to
the node's release. The embedded model is published to the bucket before the clock starts.

Last line: `figure: autoscaler scale-up (study submitted -> first trial running on a new node) <median> s`
(goal: under 30 s on the fake provider).
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # noqa: A001 - keep the figure line last when stderr is merged

BUCKET = "xstilts-bench"


def make_entry(folder: Path, size_mb: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"hidden_size": 1024}')
    with open(folder / "model.safetensors", "wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(1 << 20))
    return folder


def time_phase_cache(root: str, entry: Path, key: str, node_cache: Path) -> tuple[float, float]:
    """(publish seconds, fetch seconds) of one entry under `root` (a local folder or s3://...)."""
    from xstilts.trainables.leases import LeaseClient, LeaseTable
    from xstilts.trainables.phase_cache import PhaseCache

    cache = PhaseCache(root, leases=LeaseClient(LeaseTable()), on_event=lambda message: None)
    started = time.perf_counter()
    cache.store(key, entry, {"benchmark": True})
    published = time.perf_counter() - started
    os.environ["XSTILTS_NODE_CACHE"] = str(node_cache)  # a node that has never read the entry
    started = time.perf_counter()
    local = cache.fetch(key)
    fetched = time.perf_counter() - started
    assert local is not None and (Path(local) / "model.safetensors").stat().st_size == (entry / "model.safetensors").stat().st_size
    return published, fetched


def phase_cache_figures(s3, work: Path, args) -> dict:
    entry = make_entry(work / "entry", args.size_mb)
    results = {"s3": [], "disk": []}
    for repeat in range(args.repeats):
        for kind in ("s3", "disk"):
            root = f"s3://{BUCKET}/phase_cache" if kind == "s3" else str(work / "disk" / "phase_cache")
            timing = time_phase_cache(root, entry, f"k{repeat}", work / f"node-cache-{kind}-{repeat}")
            results[kind].append(timing)
            print(f"  repeat {repeat + 1} {kind:4s}: publish {timing[0]:.2f}s, fetch {timing[1]:.2f}s")
    figures = {}
    for kind, timings in results.items():
        figures[f"{kind}_publish"] = statistics.median(t[0] for t in timings)
        figures[f"{kind}_fetch"] = statistics.median(t[1] for t in timings)
    return figures


def study_config(storage: str, tracking_uri: str) -> dict:
    import yaml

    from xstilts.study.config import DEFAULT_CONFIG

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="scale-up", num_samples=1, max_concurrent_trials=1, target_tasks=["synthetic_xnli"],
               intermediate_tasks=["none"], storage_path=storage,
               search_space={"target_lr": {"type": "choice", "values": [0.001]}})
    raw["search"].update(scheduler="fifo", grace_period=1)
    raw["training"].update(target_epochs=1, max_train_examples=200, max_eval_examples=80)
    raw["mlflow"]["tracking_uri"] = tracking_uri
    return raw


def scale_up_once(s3, work: Path, index: int, args) -> dict:
    import yaml
    from xstilts.study.rehearsal import FakeAutoscalingCluster

    folder = work / f"scale-up-{index}"
    folder.mkdir()
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    (folder / "study.yaml").write_text(yaml.safe_dump(study_config(f"s3://{BUCKET}/studies", tracking_uri)))
    env = {**os.environ, **s3.env, "HF_HUB_OFFLINE": "1"}
    with FakeAutoscalingCluster(max_workers=2, idle_timeout_minutes=args.idle_minutes, extra_env=env) as cluster:
        assert cluster.worker_node_count() == 0
        submitted = time.monotonic()
        driver = subprocess.Popen([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--address",
                                   cluster.address, "--name", f"scale-up-{index}"], cwd=folder,
                                  stdout=open(folder / "out.log", "w"), stderr=subprocess.STDOUT,
                                  env={**env, **cluster.client_env})
        node_up = trial_running = None
        while driver.poll() is None and (node_up is None or trial_running is None):
            if node_up is None and cluster.worker_node_count() > 0:
                node_up = time.monotonic() - submitted
            # Tune's trial-start event (the study's "started:" line): the trial's actor got its
            # resources, which exist only on a launched node. (Polling the MLflow sqlite file
            # here instead raced the driver's schema migration of the new store.)
            if trial_running is None and " started: " in (folder / "out.log").read_text():
                trial_running = time.monotonic() - submitted
            time.sleep(0.25)
        code = driver.wait(timeout=600)
        done = time.monotonic() - submitted
        if code != 0:
            raise RuntimeError(f"the study failed ({code}): {(folder / 'out.log').read_text()[-2000:]}")
        released = cluster.wait_for_no_workers(timeout_s=300) + (time.monotonic() - submitted - done)
    return {"node_up": node_up, "trial_running": trial_running, "study_done": done, "released_after_done": released}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=32, help="size of the phase-cache entry (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="publish/fetch repeats per store (default 3)")
    parser.add_argument("--scale-ups", type=int, default=1, help="autoscaler scale-ups to time (default 1)")
    parser.add_argument("--idle-minutes", type=float, default=0.25, help="autoscaler idle timeout (default 0.25)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from xstilts.study.rehearsal import LocalS3Server
    from xstilts.trainables.embedded_model import publish_embedded_model

    with tempfile.TemporaryDirectory(prefix="xstilts-object-store-bench-") as temporary:
        work = Path(temporary)
        with LocalS3Server(work / "s3") as s3:
            s3.create_bucket(BUCKET)
            os.environ.update(s3.env)
            print(f"phase cache: one {args.size_mb} MB entry, {args.repeats} repeats, S3 (SeaweedFS on loopback) vs local disk")
            figures = phase_cache_figures(s3, work, args)
            for step in ("publish", "fetch"):
                ratio = figures[f"s3_{step}"] / figures[f"disk_{step}"]
                print(f"{step:8s} median: S3 {figures[f's3_{step}']:.2f}s, disk {figures[f'disk_{step}']:.2f}s, "
                      f"ratio S3/disk {ratio:.1f}x ({args.size_mb / figures[f's3_{step}']:.0f} MB/s on S3)")
            started = time.time()
            publish_embedded_model(f"s3://{BUCKET}/studies/embedded_models", log=lambda line: None)
            print(f"embedded model published to the bucket in {time.time() - started:.0f}s (before the clock starts)")
            ups = []
            for index in range(args.scale_ups):
                result = scale_up_once(s3, work, index, args)
                ups.append(result)
                print(f"scale-up {index + 1}: first worker node alive {result['node_up']:.1f}s, first trial running "
                      f"{result['trial_running']:.1f}s after submission; study done at {result['study_done']:.0f}s; "
                      f"nodes released {result['released_after_done']:.0f}s after it")
    median = statistics.median(u["trial_running"] for u in ups)
    print(f"scale-up median over {len(ups)}: first node {statistics.median(u['node_up'] for u in ups):.1f}s, "
          f"first trial running {median:.1f}s (goal < 30 s)")
    print(f"figure: autoscaler scale-up (study submitted -> first trial running on a new node) {median:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
