"""Turn a recorded grid study's MLflow records into the compact table the search-efficiency
benchmark replays (benchmarks/data/grid_embedded.json, a few kilobytes).

    python benchmarks/record_grid.py --study NAME [--config YAML] [--tracking-uri URI] [--experiment E] [--out FILE]

Per configuration (intermediate task, intermediate lr, target lr) and seed: the English dev score
of every target epoch (MLflow's metric history of `en_dev_score`), the final all-language and
zero-shot means, and the seconds of each phase (phase 2: its training seconds when this trial
trained it, else 0 for a cache hit; phase 3: the sum of its epochs'). The table names the study config
it was recorded from (`config`, relative to the repository), whose search space the replay searches.
Read through
`xstilts.analysis.records` and MLflow's client; writes one JSON file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from xstilts.analysis.records import find_study, iter_trials
from xstilts.tasks.record_schema import (EPOCH_EN_DEV, FINAL_ALL_LANGUAGES, FINAL_ZERO_SHOT, INTERMEDIATE_PREFIX,
                                         PARAM_INTERMEDIATE_LR, PARAM_SEED_INDEX, PARAM_TARGET_LR)

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "grid_embedded.json"


def _history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    points = {}
    for metric in client.get_metric_history(run_id, key):
        points[metric.step] = metric.value  # a retried epoch: the last write of its step
    return [points[step] for step in sorted(points)]


def record(study_name: str, tracking_uri: str, experiment: str, config: str = "search_spaces/grid_embedded.yaml") -> dict:
    study = find_study(tracking_uri, experiment, study_name)
    client = MlflowClient(tracking_uri)
    rows, target, intermediate_epochs = [], None, None
    for trial in iter_trials(study):
        if not trial.completed:
            continue
        target = trial.target_task
        intermediate_epochs = int(trial.params.get("training.intermediate_epochs", 0))
        rows.append({
            "intermediate": trial.intermediate_task,
            "intermediate_lr": float(trial.params.get(PARAM_INTERMEDIATE_LR) or 0.0),
            "target_lr": float(trial.params[PARAM_TARGET_LR]),
            "seed": int(trial.params.get(PARAM_SEED_INDEX) or 0),
            "en_dev": [round(v, 4) for v in _history(client, trial.run_id, EPOCH_EN_DEV)],
            "all_languages": round(trial.metrics[FINAL_ALL_LANGUAGES], 4),
            "zero_shot": round(trial.metrics.get(FINAL_ZERO_SHOT, float("nan")), 4),
            "phase2_seconds": round(sum(_history(client, trial.run_id, INTERMEDIATE_PREFIX + "train_seconds")), 2),
            "phase3_seconds": round(sum(_history(client, trial.run_id, "train_seconds")), 2),
        })
    rows.sort(key=lambda r: (r["intermediate"], r["intermediate_lr"], r["target_lr"], r["seed"]))
    return {"study": study.name, "config": config, "target": target, "intermediate_epochs": intermediate_epochs, "trials": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--config", default="search_spaces/grid_embedded.yaml",
                        help="the recorded study's config, relative to the repository (its search space is replayed)")
    parser.add_argument("--tracking-uri", default="sqlite:///xstilts_runs/mlflow.db")
    parser.add_argument("--experiment", default="xstilts-grid")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args()
    table = record(args.study, args.tracking_uri, args.experiment, args.config)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=0) + "\n")
    print(f"{len(table['trials'])} trials of study {table['study']} -> {args.out}")


if __name__ == "__main__":
    main()
