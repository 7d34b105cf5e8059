"""Is our search cheaper than the grid? Replay a recorded grid through the real search stack.

The table (`benchmarks/data/grid_embedded.json`, made by `record_grid.py` from a real run of
`search_spaces/grid_embedded.yaml`) holds, per configuration (intermediate task, intermediate lr,
target lr) and training seed, the English dev score of every target epoch and the final
all-language score. A replay trainable reports one seed's recorded curve (the seed drawn per
trial, so the noise is the real one) through the study's own `make_tuner` (Tune, OptunaSearch,
ConcurrencyLimiter, ASHA or FIFO): the searcher, the scheduler and their settings are exactly
the study's; only the training is replayed.

Cost = target epochs trained, plus the phase-2 epochs of each distinct (intermediate, lr) the
first time a trial needs it (the phase cache makes later ones free). A strategy "reaches" the
grid when the configuration it has selected so far (the completed trial with the best English
dev score, the honest zero-shot choice) has a true score (its seed-mean all-language score)
within 0.5 points of the true score of the grid's own choice (the configuration with the best
seed-mean English dev). Per strategy, over replay seeds: the median and interquartile range of
cost-to-reach / full-grid cost, the fraction of seeds that reach at all, and a regret-vs-cost
curve (PNG).

    python benchmarks/search_efficiency.py            # quick: 3 replay seeds per strategy
    python benchmarks/search_efficiency.py --full     # 20 replay seeds per strategy
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = Path(__file__).resolve().parent / "data" / "grid_embedded.json"
CONFIG = REPO / "search_spaces" / "grid_embedded.yaml"
WITHIN = 0.5  # points of the true score

STRATEGIES = {  # name -> (sampler, scheduler, what Optuna is told of a stopped trial)
    "grid": ("grid", "fifo", "pruned"),
    "random": ("random", "fifo", "pruned"),
    "random+ASHA": ("random", "asha", "pruned"),
    "TPE": ("tpe", "fifo", "pruned"),
    "TPE+ASHA (stopped told complete)": ("tpe", "asha", "complete"),
    "TPE+ASHA (default)": ("tpe", "asha", "pruned"),
}


class Grid:
    """The recorded grid: its configurations, their seeds' curves and true scores."""

    def __init__(self, table: dict):
        self.intermediate_epochs = table["intermediate_epochs"]
        self.runs: dict[tuple, list[dict]] = {}
        for row in table["trials"]:
            self.runs.setdefault(self.key(row["intermediate"], row["intermediate_lr"], row["target_lr"]), []).append(row)
        self.target_epochs = max(len(r["en_dev"]) for rows in self.runs.values() for r in rows)

    @staticmethod
    def key(intermediate: str, intermediate_lr: float, target_lr: float) -> tuple:
        return intermediate, round(float(intermediate_lr or 0.0), 12), round(float(target_lr), 12)

    def true_score(self, key: tuple) -> float:
        return statistics.fmean(r["all_languages"] for r in self.runs[key])

    def dev_mean(self, key: tuple) -> float:
        return statistics.fmean(r["en_dev"][-1] for r in self.runs[key])

    def reference(self) -> float:
        """The true score of the grid's own choice (best seed-mean English dev)."""
        return self.true_score(max(self.runs, key=self.dev_mean))

    def full_cost(self) -> int:
        phase2 = {(k[0], k[1]) for k in self.runs if k[0] != "none"}
        return len(self.runs) * self.target_epochs + len(phase2) * self.intermediate_epochs


def replay(config: dict, grid: Grid = None, replay_seed: int = 0) -> None:
    """The trainable: one recorded seed's English dev curve of the proposed configuration."""
    from ray import tune

    from xstilts.tasks.record_schema import EPOCH_EN_DEV, FINAL_EN_DEV, TARGET_EPOCH

    key = Grid.key(config["intermediate_task"], config.get("intermediate_lr", 0.0), config["target_lr"])
    rows = grid.runs[key]
    draw = random.Random(f"{replay_seed}/{tune.get_context().get_trial_id()}").randrange(len(rows))
    curve = rows[draw]["en_dev"]
    for epoch, score in enumerate(curve, start=1):
        # The last epoch carries the final record, as a real trial's does (a trial without it was stopped).
        final = {FINAL_EN_DEV: score} if epoch == len(curve) else {}
        tune.report({EPOCH_EN_DEV: score, TARGET_EPOCH: epoch, "config_key": json.dumps(key), "drawn_seed": draw, **final})


def run_strategy(grid: Grid, sampler: str, scheduler: str, stopped: str, replay_seed: int, work: Path) -> list[dict]:
    """One search, replayed: the trials in the order Tune created them, with what each reported."""
    from ray import tune

    from xstilts.study.config import load_config
    from xstilts.study.runner import make_tuner

    config = load_config(CONFIG)
    config = dataclasses.replace(config, seeds=1, num_samples=len(grid.runs), max_concurrent_trials=2,
                                 search=dataclasses.replace(config.search, sampler=sampler, scheduler=scheduler,
                                                            seed=replay_seed, grace_period=1, optuna_storage="none",
                                                            tell_stopped_as=stopped))
    trainable = tune.with_resources(tune.with_parameters(replay, grid=grid, replay_seed=replay_seed), {"cpu": 0.5})
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # Tune's tables
        results = make_tuner(trainable, config, 0, {}, str(work), []).fit()
    trials = []
    for result in results:
        history = result.metrics_dataframe
        if history is None or history.empty:
            continue
        trials.append({"trial_id": result.metrics["trial_id"], "key": tuple(json.loads(result.metrics["config_key"])),
                       "epochs": int(history["target_epoch"].max()), "final_dev": float(history["en_dev_score"].iloc[-1])})
    return sorted(trials, key=lambda t: t["trial_id"])  # Tune's ids count up in creation order


def cost_curve(grid: Grid, trials: list[dict]) -> list[tuple[int, float]]:
    """(cumulative cost, regret of the selection so far) after each trial, in creation order."""
    reference, seen, cost, best = grid.reference(), set(), 0, None
    curve = []
    for trial in trials:
        intermediate, intermediate_lr, _ = trial["key"]
        if intermediate != "none" and (intermediate, intermediate_lr) not in seen:
            seen.add((intermediate, intermediate_lr))
            cost += grid.intermediate_epochs
        cost += trial["epochs"]
        if trial["epochs"] == grid.target_epochs and (best is None or trial["final_dev"] > best["final_dev"]):
            best = trial  # completed trials only: a stopped one was not trained to the end
        regret = reference - grid.true_score(best["key"]) if best else float("inf")
        curve.append((cost, regret))
    return curve


def cost_to_reach(curve: list[tuple[int, float]]) -> float:
    return next((cost for cost, regret in curve if regret <= WITHIN), float("inf"))


def plot(curves: dict[str, list[list[tuple[int, float]]]], full_cost: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.2))
    axes = figure.subplots()
    steps = list(range(1, full_cost + 1))
    for name, runs in curves.items():
        medians = []
        for budget in steps:
            at = [min((r for c, r in run if c <= budget), default=float("nan")) if any(c <= budget for c, _ in run)
                  else float("nan") for run in runs]
            finite = [a for a in at if a == a and a != float("inf")]
            medians.append(statistics.median(finite) if len(finite) * 2 > len(at) else float("nan"))
        axes.plot([s / full_cost for s in steps], medians, label=name)
    axes.axhline(WITHIN, linestyle=":", color="grey")
    axes.set_xlabel("cost / full-grid cost")
    axes.set_ylabel("regret of the selection (points, median)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="20 replay seeds per strategy (default: 3)")
    parser.add_argument("--seeds", type=int, default=None, help="replay seeds per strategy")
    parser.add_argument("--table", default=str(TABLE), help="the recorded grid (record_grid.py)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset of the strategies")
    parser.add_argument("--png", default=str(Path(__file__).resolve().parent / "search_efficiency.png"))
    args = parser.parse_args()
    seeds = args.seeds or (20 if args.full else 3)
    table = Path(args.table)
    if not table.exists():
        sys.exit(f"no recorded grid at {table}: run search_spaces/grid_embedded.yaml, then benchmarks/record_grid.py")
    grid = Grid(json.loads(table.read_text()))
    chosen = {name: STRATEGIES[name] for name in args.strategies.split(",")}
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"grid: {len(grid.runs)} configurations x {len(next(iter(grid.runs.values())))} seeds; full-grid cost "
          f"{grid.full_cost()} epochs; reference true score {grid.reference():.2f}; {seeds} replay seeds per strategy")
    curves, summary = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for name, (sampler, scheduler, stopped) in chosen.items():
            curves[name] = [cost_curve(grid, run_strategy(grid, sampler, scheduler, stopped, seed,
                                                          Path(work) / f"{len(curves)}-{seed}"))
                            for seed in range(seeds)]
            ratios = sorted(cost_to_reach(c) / grid.full_cost() for c in curves[name])
            reached = [r for r in ratios if r != float("inf")]
            quartiles = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) >= 2 else [ratios[0]] * 3
            summary[name] = (statistics.median(ratios), quartiles[0], quartiles[2], len(reached) / len(ratios))
            median, q1, q3, fraction = summary[name]
            print(f"{name:<20} cost-to-reach / grid: median {median:.2f} (IQR {q1:.2f}-{q3:.2f}); reached in "
                  f"{fraction:.0%} of {seeds} replays")
    ray.shutdown()
    plot(curves, grid.full_cost(), Path(args.png))
    print(f"regret vs cost: {args.png}")
    headline = "TPE+ASHA (default)" if "TPE+ASHA (default)" in summary else next(iter(summary))
    median, _, _, fraction = summary[headline]
    print(f"figure: median cost-to-reach / full grid, {headline}: {median:.2f} (reached in {fraction:.0%} of replays)")


if __name__ == "__main__":
    main()
