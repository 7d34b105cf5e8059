"""How much does the study driver cost per trial? Many trials of a trivial trainable (no model:
it reports a made-up English dev score per epoch) through the study's own driver code path, on
a multi-node Ray cluster simulated on this machine (`ray.cluster_utils.Cluster`).

Real building blocks, not copies: the study config is parsed by `xstilts.study.config.parse_config`, Ray
is joined by `xstilts.study.runner._start_ray(address)` (as `xstilts run --address`), each target's
search is `xstilts.study.runner.make_tuner` (OptunaSearch TPE over the conditional space with its
ConcurrencyLimiter, ASHA, `tune.with_resources` on the TRAIN_DRIVER resource), and the
`xstilts.study.study_run.StudyProgress` callback looks each finished trial's MLflow run up in a sqlite
store, as in a study. Only the trainable is trivial.

Printed: the driver's overhead per trial = CPU seconds the driver process (Tune's loop, Optuna,
ASHA, the callback, experiment-state saves) spends per trial: its busy time, since it is one
event loop; wall time of the search and wall per trial (the cluster's throughput: the trials do
no work, so it is scheduling plus starting one trial process per trial, which on a 2-core machine
hosting 9 simulated nodes is what dominates); the driver's RSS before and at its peak (growth
with the number of trials).

    python benchmarks/driver_scale.py                 # quick: 100 trials, 8 nodes (~3-4 min here)
    python benchmarks/driver_scale.py --trials 1000   # the issue's figure (~20-30 min here)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def trivial_trial(config: dict) -> None:
    """A trial with no model: a deterministic score per epoch from its learning rates.

    It imports nothing of the project (xstilts.study.search would pull in torch and transformers, seconds
    of start-up per trial process): the metric names come in its config."""
    import math

    from ray import tune

    SELECTION_METRIC, TIME_ATTR = config["selection_metric"], config["time_attr"]
    epochs = config["training"]["target_epochs"]
    peak = 60 + 10 * math.exp(-abs(math.log10(config["target_lr"]) + 3))
    if config.get("intermediate_task") not in (None, "none"):
        peak += 2
    for epoch in range(1, epochs + 1):
        tune.report({TIME_ATTR: epoch, SELECTION_METRIC: peak * (1 - 0.5 ** epoch)})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss:
    """The driver's RSS sampled every 0.5 s while the search runs (ru_maxrss also counts imports)."""

    def __init__(self):
        self.peak, self._stop = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100, help="trials (default 100, the quick version; the issue's figure is 1000)")
    parser.add_argument("--nodes", type=int, default=8, help="simulated worker nodes (default 8)")
    parser.add_argument("--concurrent", type=int, default=16, help="max_concurrent_trials (default 16: 2 per node)")
    parser.add_argument("--epochs", type=int, default=6, help="reports per trial, ASHA's max_t (default 6)")
    parser.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    parser.add_argument("--no-mlflow", action="store_true", help="leave out the StudyProgress callback (no MLflow lookups)")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    import yaml
    from ray import tune
    from ray.cluster_utils import Cluster

    from xstilts.study.config import DEFAULT_CONFIG, parse_config
    from xstilts.study.runner import TRIAL_DRIVER_RESOURCE, _start_ray, make_tuner
    from xstilts.study.search import SELECTION_METRIC, TIME_ATTR
    from xstilts.study.study_run import StudyProgress, ensure_experiment, start_study_run

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="driver-scale", num_samples=args.trials, max_concurrent_trials=args.concurrent,
               target_tasks=["synthetic_xnli"])
    raw["search"].update(scheduler=args.scheduler, grace_period=min(2, args.epochs))
    raw["training"].update(target_epochs=args.epochs)
    config = parse_config(raw, "driver_scale")

    work = Path(tempfile.mkdtemp(prefix="xstilts-driver-scale-"))
    per_node = max(1, -(-args.concurrent // args.nodes))
    started = time.time()
    # Head: GCS and dashboard only (no CPU, no trial slot), like cluster.yaml's head minus the
    # trial drivers; every trial runs on a worker node.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=1, resources={TRIAL_DRIVER_RESOURCE: per_node})
    cluster.wait_for_nodes()
    print(f"cluster: head + {args.nodes} worker nodes ({per_node} trial slots, 1 CPU each), "
          f"up in {time.time() - started:.1f}s", flush=True)
    try:
        resources = _start_ray(cluster.address, config.max_concurrent_trials, print)
        alive = sum(1 for node in ray.nodes() if node["Alive"])
        callbacks = []
        if not args.no_mlflow:
            uri = f"sqlite:///{work / 'mlflow.db'}"
            experiment_id = ensure_experiment(uri, "driver-scale", str(work / "artifacts"))
            parent = start_study_run(uri, experiment_id, "driver-scale", {"trials": args.trials}, "")
            callbacks.append(StudyProgress(uri, experiment_id, parent, "synthetic_xnli", "accuracy",
                                           args.epochs, args.trials))
        base = {"study_name": "driver-scale", "training": {"target_epochs": args.epochs},
                "selection_metric": SELECTION_METRIC, "time_attr": TIME_ATTR}
        tuner = make_tuner(tune.with_resources(trivial_trial, resources), config, 0, base, str(work / "tune"), callbacks)
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        rss_before = _rss_mb()
        progress_lines = io.StringIO()  # StudyProgress prints 2 lines per trial: kept, not shown
        with PeakRss() as rss, contextlib.redirect_stdout(progress_lines):
            fit_started = time.time()
            results = tuner.fit()
            wall = time.time() - fit_started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        ray.shutdown()
        cluster.shutdown()
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    errors = sum(1 for r in results if r.error is not None)
    epochs = [r.metrics.get("target_epoch", 0) for r in results]
    full = sum(1 for e in epochs if e >= args.epochs)
    print(f"nodes alive: {alive}; trials: {len(results)} ({full} ran all {args.epochs} epochs, "
          f"{len(results) - full - errors} stopped by {args.scheduler}, {errors} errors); "
          f"{len(progress_lines.getvalue().splitlines())} progress lines")
    print(f"search wall: {wall:.1f}s for {len(results)} trials, {args.concurrent} at once: {wall / len(results):.2f}s "
          f"per trial (cluster throughput; the driver was busy {100 * cpu / wall:.0f}% of it)")
    print(f"driver CPU: {cpu:.1f}s in all, {cpu / len(results):.3f}s per trial")
    print(f"driver RSS: {rss_before:.0f} MB before the search, peak {rss.peak:.0f} MB "
          f"(ru_maxrss {cpu_after.ru_maxrss / 1024:.0f} MB)")
    print(f"driver overhead per trial (s): {cpu / len(results):.3f}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
