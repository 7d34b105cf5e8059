"""How long does `xstilts analyze` take on a study of many trials, and how does it grow?

Builds MLflow sqlite stores holding one study of 1,000 and one of 10,000 trial runs, then times
the real `xstilts analyze --study S --json` command (a fresh process, imports included) and, in
process, the analysis functions it calls (`xstilts.analysis.records.find_study` + `iter_trials` +
`xstilts.analysis.select.best_per_target`).

Building 10k runs through the MLflow client costs ~0.1 s a run here (create_run + log_batch +
set_terminated: ~20 min), so one trial run is written the way a trial writes it
(`xstilts.trainables.trial_run.TrialRun`: tags, params, per-epoch metrics, final per-language metrics)
and then cloned in bulk, row by row in MLflow's own tables (runs, tags, params, metrics,
latest_metrics), with a new run id, trial id, target/intermediate task and scores per clone.
The stores are kept (default /tmp/xstilts-analysis-scale) and reused by the next run.

    python benchmarks/analysis_scale.py                     # 1k and 10k, 3 repeats each
    python benchmarks/analysis_scale.py --sizes 1000 10000 50000 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STUDY = "analysis-scale"
STORE_VERSION = 1  # bump when the synthetic runs change: old cached stores are rebuilt
TARGETS = {"synthetic_xnli": "accuracy", "synthetic_panx": "f1"}
INTERMEDIATES = ["none", "synthetic_mnli", "synthetic_qqp"]
LANGUAGES = ["en", "near", "mid", "far"]
EPOCHS = 6


def _template_run(uri: str) -> tuple[str, str]:
    """A study parent run and one trial run written through the project's own writers."""
    from xstilts.study.study_run import ensure_experiment, start_study_run
    from xstilts.tasks.record_schema import TAG_CHECKPOINT, TAG_INTERMEDIATE, TAG_SELECTION_METRIC, TAG_STUDY, TAG_TARGET
    from xstilts.trainables.trial_run import TrialRun

    experiment_id = ensure_experiment(uri, "xstilts", None)
    parent = start_study_run(uri, experiment_id, STUDY, {"num_samples_per_target": 0}, "name: analysis-scale\n")
    run = TrialRun.open(uri, experiment_id, parent, "template", "template",
                        {TAG_STUDY: STUDY, TAG_TARGET: "synthetic_xnli", TAG_INTERMEDIATE: "synthetic_mnli",
                         TAG_SELECTION_METRIC: "accuracy"})
    run.log_params({"target_task": "synthetic_xnli", "intermediate_task": "synthetic_mnli", "intermediate_lr": 0.001,
                    "target_lr": 0.001, "model": "/models/tiny", "seed": 0, "data_dir": None, "num_workers": 1,
                    "use_gpu": False, **{f"training.{k}": 1 for k in ("batch_size", "target_epochs", "max_length",
                                                                       "warmup_ratio", "weight_decay")}})
    for epoch in range(1, EPOCHS + 1):
        run.log_metrics({"epoch": epoch, "target_epoch": epoch, "train_loss": 1.0 / epoch, "en_dev_score": 50 + epoch,
                         "dev/en/accuracy": 50 + epoch, "train_seconds": 1.0}, step=epoch)
    final = {f"final/dev/{lang}/accuracy": 50.0 for lang in LANGUAGES}
    final.update({f"final/chance/{lang}/accuracy": 33.3 for lang in LANGUAGES})
    final.update({"final/en_dev_score": 50.0, "final/zero_shot_mean": 50.0, "final/all_languages_mean": 50.0})
    run.log_metrics(final, step=EPOCHS)
    run.set_tags({TAG_CHECKPOINT: "/checkpoints/template"})
    run.finish("FINISHED")
    return parent, run.run_id


def _clone_runs(db: Path, template: str, count: int, seed: int = 0) -> None:
    """`count` copies of the template trial run, varied where analysis looks."""
    rng = random.Random(seed)
    con = sqlite3.connect(db)
    tables = {}
    for table in ("runs", "tags", "params", "metrics", "latest_metrics"):
        cursor = con.execute(f"SELECT * FROM {table} WHERE run_uuid = ?", (template,))
        tables[table] = ([d[0] for d in cursor.description], cursor.fetchall())
    rows: dict[str, list] = {table: [] for table in tables}
    for index in range(count):
        run_id = uuid.uuid4().hex
        target = list(TARGETS)[index % len(TARGETS)]
        metric = TARGETS[target]
        intermediate = INTERMEDIATES[(index // len(TARGETS)) % len(INTERMEDIATES)]
        scores = {lang: rng.uniform(30, 90) for lang in LANGUAGES}
        finished = index % 5 != 0  # every fifth trial stopped early by ASHA: no final metrics
        values = {f"final/dev/{lang}/accuracy": scores[lang] for lang in LANGUAGES}
        values.update({"final/en_dev_score": scores["en"], "en_dev_score": scores["en"],
                       "final/all_languages_mean": sum(scores.values()) / 4,
                       "final/zero_shot_mean": sum(scores[l] for l in LANGUAGES[1:]) / 3})
        tag_values = {"xstilts.trial_id": f"t{index:06d}", "xstilts.target_task": target,
                      "xstilts.intermediate_task": intermediate, "xstilts.selection_metric": metric,
                      "mlflow.runName": f"{target}-{intermediate}-t{index:06d}",
                      "xstilts.checkpoint": f"/checkpoints/t{index:06d}"}
        param_values = {"target_task": target, "intermediate_task": intermediate,
                        "target_lr": f"{rng.uniform(3e-4, 3e-3):.6g}"}
        for table, (columns, template_rows) in tables.items():
            key_at = columns.index("key") if "key" in columns else None
            for row in template_rows:
                row = list(row)
                row[columns.index("run_uuid")] = run_id
                if table == "runs":
                    row[columns.index("name")] = tag_values["mlflow.runName"]
                    row[columns.index("status")] = "FINISHED" if finished else "KILLED"
                    if "artifact_uri" in columns:
                        row[columns.index("artifact_uri")] = str(row[columns.index("artifact_uri")]).replace(template, run_id)
                    rows[table].append(row)
                    continue
                key = row[key_at]
                if table in ("metrics", "latest_metrics"):
                    if key.startswith("final/") and not finished:
                        continue
                    name = key.replace("/accuracy", f"/{metric}")
                    row[key_at] = name
                    if key in values and (table == "latest_metrics" or key.startswith("final/")):
                        row[columns.index("value")] = values[key]
                elif table == "tags" and key in tag_values:
                    row[columns.index("value")] = tag_values[key]
                elif table == "params" and key in param_values:
                    row[columns.index("value")] = param_values[key]
                rows[table].append(row)
    with con:
        for table, (columns, _) in tables.items():
            marks = ", ".join("?" for _ in columns)
            con.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows[table])
        for table in ("runs", "tags", "params", "metrics", "latest_metrics"):  # the template itself goes
            con.execute(f"DELETE FROM {table} WHERE run_uuid = ?", (template,))
    con.close()


def build_store(folder: Path, count: int) -> str:
    """A sqlite store with one study of `count` trial runs (reused when already built)."""
    db = folder / f"analysis_{count}_v{STORE_VERSION}.db"
    uri = f"sqlite:///{db}"
    if db.exists():
        return uri
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"building_{count}_{os.getpid()}.db"
    partial_uri = f"sqlite:///{partial}"
    started = time.time()
    _, template = _template_run(partial_uri)
    _clone_runs(partial, template, count)
    partial.rename(db)  # only a complete store is ever reused
    print(f"built {db} ({count} trial runs) in {time.time() - started:.1f}s", flush=True)
    return uri


def time_cli(uri: str) -> tuple[float, dict]:
    import json

    started = time.time()
    result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "analyze", "--study", STUDY, "--tracking-uri", uri,
                             "--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"xstilts analyze failed: {result.stderr[-2000:]}")
    return seconds, json.loads(result.stdout)


def time_in_process(uri: str) -> tuple[float, int]:
    from xstilts.analysis.records import find_study, iter_trials
    from xstilts.analysis.select import best_per_target

    started = time.time()
    trials = list(iter_trials(find_study(uri, "xstilts", STUDY)))
    best_per_target(trials)
    return time.time() - started, len(trials)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="trial runs per store (default 1000 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size; medians are reported (default 3)")
    parser.add_argument("--cache", default="/tmp/xstilts-analysis-scale", help="where the stores are kept and reused")
    args = parser.parse_args(argv)

    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    medians = {}
    for size in args.sizes:
        uri = build_store(Path(args.cache), size)
        cli, inproc = [], []
        for _ in range(args.repeats):
            seconds, output = time_cli(uri)
            cli.append(seconds)
            seconds, count = time_in_process(uri)
            inproc.append(seconds)
            assert count == size, (count, size)
        completed = sum(v["completed_trials"] for v in output["best"].values())
        medians[size] = statistics.median(cli)
        print(f"{size:>6} trial runs ({completed} completed): xstilts analyze {medians[size]:.2f}s "
              f"(runs {', '.join(f'{s:.2f}' for s in cli)}); in process: find_study + iter_trials + best_per_target "
              f"{statistics.median(inproc):.2f}s (runs {', '.join(f'{s:.2f}' for s in inproc)})", flush=True)
    sizes = sorted(medians)
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print(f"growth {small} -> {large} runs ({large / small:.0f}x): x{medians[large] / medians[small]:.2f} in time")
    print(f"xstilts analyze at {sizes[-1]} runs (s): {medians[sizes[-1]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
