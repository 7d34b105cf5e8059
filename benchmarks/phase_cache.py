"""Does every distinct phase 2 train exactly once in a real study? Counted from MLflow and disk.

    python benchmarks/phase_cache.py [--repeats 3] [--num-samples 2] [--concurrent 2] [--keep DIR]
    python benchmarks/phase_cache.py --num-samples 4      # the full grid: 8 trials a study (~2.5 min each here)

Each repeat runs a real study through the study code (xstilts.study.config.parse_config ->
xstilts.study.runner.resolve -> run_study: local Ray, Tune + Optuna, Ray Train phases, MLflow sqlite),
in a fresh storage folder (so a fresh phase cache), over
    2 target tasks (synthetic_xnli, synthetic_panx)
  x 2 target learning rates ({type: choice})
  x 2 intermediate tasks (synthetic_mnli, synthetic_qqp; one intermediate lr)
with `--num-samples` trials per target (default 2, so that 3 repeats fit in ~5 minutes on 2 cores;
4 covers the grid in expectation), `--concurrent` at once (so two trials needing the same
phase 2 do run at the same moment), the FIFO scheduler (no trial stopped early), and tiny
training sizes (the point is the count, not the accuracy). The model is the embedded default
(tiny XLM-R), built once into the usual cache (XSTILTS_CACHE or ~/.cache/xstilts; ~1 minute the
first time) and named by its folder.

Counted per study:
  phase-2 trainings   trial runs tagged xstilts.phase_cache = miss (cross-checked against the
                      <study>/train_runs/intermediate-<key> folders Ray Train wrote)
  distinct configs    distinct xstilts.phase_cache_key tags (cross-checked against the distinct
                      (intermediate task, intermediate lr) pairs of the trials' params)
Target: trainings / distinct configs = 1.00 in every repeat (no phase 2 trained twice, none lost).

Last line: `figure: phase-2 trainings / distinct configs <median>`.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # noqa: A001 - keep the figure line last when stderr is merged

TARGETS = ["synthetic_xnli", "synthetic_panx"]
INTERMEDIATES = ["synthetic_mnli", "synthetic_qqp"]


def study_config(name: str, model: str, storage: Path, args) -> dict:
    return {
        "name": name, "model": model, "target_tasks": TARGETS, "intermediate_tasks": INTERMEDIATES,
        "search_space": {"intermediate_lr": {"type": "choice", "values": [0.001]},
                         "target_lr": {"type": "choice", "values": [0.001, 0.0003]}},
        "search": {"sampler": "random", "seed": 0, "scheduler": "fifo", "baseline_first": False},
        "num_samples": args.num_samples, "max_concurrent_trials": args.concurrent,
        "resources": {"num_workers": 1, "cpus_per_worker": 1, "max_failures": 1},
        "training": {"batch_size": 32, "intermediate_epochs": 1, "target_epochs": 1, "max_train_examples": 200,
                     "max_eval_examples": 100},
        "mlflow": {"tracking_uri": f"sqlite:///{storage / 'mlflow.db'}", "experiment": "phase-cache-benchmark"},
        "storage_path": str(storage), "seed": 0,
    }


def count(storage: Path, study_name: str, tracking_uri: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("phase-cache-benchmark")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`xstilts.run_kind` = 'trial'")
    phase2 = [r for r in runs if r.data.params.get("intermediate_task", "none") != "none"]
    misses = [r for r in phase2 if r.data.tags.get("xstilts.phase_cache") == "miss"]
    hits = [r for r in phase2 if r.data.tags.get("xstilts.phase_cache") == "hit"]
    keys = {r.data.tags.get("xstilts.phase_cache_key") for r in phase2}
    configs = {(r.data.params["intermediate_task"], float(r.data.params["intermediate_lr"])) for r in phase2}
    folders = list((storage / study_name / "train_runs").glob("intermediate-*"))
    return {"trials": len(runs), "phase2_trials": len(phase2), "misses": len(misses), "hits": len(hits),
            "keys": len(keys - {None}), "configs": len(configs), "folders": len(folders),
            "finished": sum(r.info.status == "FINISHED" for r in runs),
            "targets": sorted({r.data.params.get("target_task") for r in runs})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=2, help="trials per target task (4: the full grid)")
    parser.add_argument("--concurrent", type=int, default=2, help="max concurrent trials")
    parser.add_argument("--keep", help="keep the studies' storage under this folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from xstilts.study.config import parse_config
    from xstilts.study.runner import resolve, run_study
    from xstilts.trainables.embedded_model import ensure_embedded_model

    started = time.time()
    model = ensure_embedded_model(log=lambda line: print(f"  {line}"))
    print(f"embedded model: {model} ({time.time() - started:.0f}s)")
    root = Path(args.keep or tempfile.mkdtemp(prefix="xstilts-phase-cache-bench-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    print(f"study: {len(TARGETS)} targets x 2 target lrs x {len(INTERMEDIATES)} intermediates (1 intermediate lr), "
          f"{args.num_samples} trials per target, {args.concurrent} concurrent, FIFO; {args.repeats} repeats, each in a "
          f"fresh storage (fresh phase cache) under {root}")
    ratios = []
    try:
        for repeat in range(args.repeats):
            storage = root / f"repeat-{repeat + 1}"
            name = f"phase-cache-bench-{repeat + 1}"
            config = parse_config(study_config(name, model, storage, args), "benchmark config")
            study = resolve(config, name)
            begin = time.time()
            completed = run_study(study, log=lambda line: None)
            seconds = time.time() - begin
            c = count(storage, name, study.tracking_uri)
            ratio = c["misses"] / c["keys"] if c["keys"] else float("nan")
            ratios.append(ratio)
            consistent = c["misses"] == c["folders"] and c["keys"] == c["configs"] and c["misses"] + c["hits"] == c["phase2_trials"]
            print(f"repeat {repeat + 1}: {seconds:.0f}s, {c['trials']} trials ({c['finished']} finished, completed "
                  f"{completed}); phase 2: {c['misses']} trained (miss) + {c['hits']} reused (hit); "
                  f"{c['keys']} distinct configs; intermediate train_runs folders {c['folders']}; "
                  f"ratio {ratio:.2f}{'' if consistent else '  (MLflow and disk counts disagree!)'}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    median = statistics.median(ratios)
    print(f"\nphase-2 trainings / distinct phase-2 configs per repeat: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {median:.2f} (target 1.00); total {time.time() - started:.0f}s")
    print(f"figure: phase-2 trainings / distinct configs {median:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
