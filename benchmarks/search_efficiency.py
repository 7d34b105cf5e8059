"""Is our search cheaper than the grid? Replay a recorded grid through the real search stack.

The table (`benchmarks/data/grid_embedded.json`, made by `record_grid.py` from a real run of
`search_spaces/grid_embedded.yaml`) holds, per configuration (intermediate task, intermediate lr,
target lr) and training seed, the English dev score of every target epoch and the final
all-language score. A replay trainable reports a recorded curve through the study's own
`make_tuner` (Tune, OptunaSearch, ConcurrencyLimiter, ASHA or FIFO): the searcher, the scheduler
and their settings are exactly the study's; only the training is replayed. Two modes:

- `one-seed`: a trial reports one seed's curve (the seed drawn per trial, so the noise is the
  real one): the issue's definition.
- `study-seed`: every trial of a replay reports the same seed's curve (replay seed modulo the
  recorded seeds): what a study with `seeds: 1` sees, since it trains every trial with its one
  `seed`. On the synthetic tasks the seed also generates the data, dev set included, so trials of
  different seeds are scored on different dev sets (ceilings 90.3 / 87.3 / 84.3 on the grid), which
  `one-seed` mixes and a real study never does.
- `seed-mean`: a trial reports the mean over the recorded seeds of the per-epoch curve: what a
  study with `seeds: 3` selects on. Every epoch then costs one epoch per seed (grid and
  strategies alike; phase 2 too: its cache key holds the seed). ASHA stops on the mean curve: a
  model of `seeds`, below.
- `seeds`: what a study with `seeds: 3` runs: every seed its own trial reporting its own curve,
  through the study's Repeater (xstilts.study.seed_groups.SeedRepeater) and, with ASHA, the study's
  scheduler (xstilts.study.asha.GroupASHA), which stops a configuration on its seeds' mean. Cost: each seed
  trial's epochs (a seed that ran ahead of its group's decision costs what it trained) and a
  phase 2 per (intermediate, lr, seed); a configuration is selectable once all its seeds completed.

Cost = target epochs trained, plus the phase-2 epochs of each distinct (intermediate, lr) the
first time a trial needs it (the phase cache makes later ones free), times the seeds in
`seed-mean` mode (`seeds` mode: per seed trial, as above). A strategy "reaches" the grid when the configuration it has selected so far
(the completed trial with the best English dev score, the honest zero-shot choice) has a true
score (its seed-mean all-language score) within 0.5 points of the true score of the grid's own
choice (the configuration with the best seed-mean English dev). Per strategy and mode, over
replay seeds: the median and interquartile range of cost-to-reach / full-grid cost, the fraction
of seeds that reach at all, and a regret-vs-cost curve (PNG, one panel per mode). Every replay's
curve is written to a JSON file as it finishes (`--out`); a rerun with the same file skips the
replays it holds, so a long run can be continued.

    python benchmarks/search_efficiency.py            # quick: grid, TPE, TPE+ASHA; 3 replay seeds per mode
    python benchmarks/search_efficiency.py --full --trials 20   # every strategy, 20 replay seeds per mode
    python benchmarks/search_efficiency.py --full --variants   # + candidate defaults (ASHA, fixed points)
    python benchmarks/search_efficiency.py --table benchmarks/data/grid_embedded.json   # the first, narrow grid

The headline (last line) is our default search in `seeds` mode: the real stack of a `seeds: 3` study.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = Path(__file__).resolve().parent / "data" / "grid_embedded_wide.json"
QUICK_STRATEGIES = ("grid", "TPE", "TPE+ASHA (default)")
CONFIG = REPO / "search_spaces" / "grid_embedded.yaml"
WITHIN = 0.5  # points of the true score
MODES = ("one-seed", "study-seed", "seed-mean", "seeds")
TITLES = {"one-seed": "one seed drawn per trial", "study-seed": "the study's one seed",
          "seed-mean": "the mean curve of the seeds", "seeds": "the seeds' mean, each seed a trial"}

# The study `xstilts run` runs: its search settings are "our default" below.
DEFAULT_STUDY = REPO / "search_spaces" / "embedded_default.yaml"


def default_search() -> dict:
    """The embedded default study's `search` section (as overrides of SearchConfig's defaults)."""
    import yaml

    search = yaml.safe_load(DEFAULT_STUDY.read_text())["search"]
    return {name: value for name, value in search.items() if name not in ("algorithm", "seed")}


# name -> the search settings of the replayed study: overrides of SearchConfig's defaults (grace
# period 1; "TPE+ASHA (default)" is the embedded default study's, whatever it is now).
STRATEGIES = {
    "grid": {"sampler": "grid", "scheduler": "fifo"},
    "random": {"sampler": "random", "scheduler": "fifo"},
    "random+ASHA": {"sampler": "random", "scheduler": "asha"},
    "TPE": {"sampler": "tpe", "scheduler": "fifo"},
    "TPE+ASHA (stopped told complete)": {"sampler": "tpe", "scheduler": "asha", "tell_stopped_as": "complete"},
    "TPE+ASHA (default)": default_search(),
}
# Candidate changes to the default (--variants): ASHA's rungs, how many seeds it judges a group on,
# and the fixed points it starts from.
VARIANTS = {
    "TPE+ASHA grace 1": {"sampler": "tpe", "scheduler": "asha", "grace_period": 1},
    "TPE+ASHA grace 1 all seeds (before)": {"sampler": "tpe", "scheduler": "asha", "grace_period": 1,
                                            "decide_on_seeds": 0},
    "TPE+ASHA grace 1 decide on 2 seeds": {"sampler": "tpe", "scheduler": "asha", "grace_period": 1,
                                           "decide_on_seeds": 2},
    "TPE+ASHA grace 2 all seeds": {"sampler": "tpe", "scheduler": "asha", "grace_period": 2, "decide_on_seeds": 0},
    "TPE+ASHA rf 3": {"sampler": "tpe", "scheduler": "asha", "reduction_factor": 3},
    "TPE+ASHA each intermediate first": {"sampler": "tpe", "scheduler": "asha", "each_intermediate_first": True},
    "TPE+ASHA no baseline first": {"sampler": "tpe", "scheduler": "asha", "baseline_first": False},
    "TPE+ASHA startup 2": {"sampler": "tpe", "scheduler": "asha", "startup_trials": 2},
    "TPE+ASHA startup 8": {"sampler": "tpe", "scheduler": "asha", "startup_trials": 8},
}


class Grid:
    """The recorded grid: its configurations, their seeds' curves and true scores."""

    def __init__(self, table: dict):
        self.intermediate_epochs = table["intermediate_epochs"]
        # The study config the grid was recorded from: the replayed searches search its space.
        self.config_path = REPO / table.get("config", CONFIG.relative_to(REPO))
        self.runs: dict[tuple, list[dict]] = {}
        for row in table["trials"]:
            self.runs.setdefault(self.key(row["intermediate"], row["intermediate_lr"], row["target_lr"]), []).append(row)
        self.target_epochs = max(len(r["en_dev"]) for rows in self.runs.values() for r in rows)
        # The seeds a study trains per configuration (a configuration may have lost a recorded seed).
        self.seeds = max(len(rows) for rows in self.runs.values())

    @staticmethod
    def key(intermediate: str, intermediate_lr: float, target_lr: float) -> tuple:
        return intermediate, round(float(intermediate_lr or 0.0), 12), round(float(target_lr), 12)

    def true_score(self, key: tuple) -> float:
        return statistics.fmean(r["all_languages"] for r in self.runs[key])

    def dev_mean(self, key: tuple) -> float:
        return statistics.fmean(r["en_dev"][-1] for r in self.runs[key])

    def mean_curve(self, key: tuple) -> list[float]:
        """The per-epoch English dev score, averaged over the recorded seeds."""
        return [statistics.fmean(epoch) for epoch in zip(*(r["en_dev"] for r in self.runs[key]))]

    def reference(self) -> float:
        """The true score of the grid's own choice (best seed-mean English dev)."""
        return self.true_score(max(self.runs, key=self.dev_mean))

    def repeats(self, mode: str) -> int:
        """Trainings per configuration: 1, or every seed in seed-mean and seeds mode."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        return self.seeds if mode in ("seed-mean", "seeds") else 1

    def full_cost(self, mode: str = "one-seed") -> int:
        phase2 = {(k[0], k[1]) for k in self.runs if k[0] != "none"}
        return (len(self.runs) * self.target_epochs + len(phase2) * self.intermediate_epochs) * self.repeats(mode)


def _seed_of(config: dict, replay_seed: int, mode: str, grid: Grid) -> int:
    """The recorded seed a trial replays: its seed index in a seed group (`seeds`), else the study's."""
    return int(config.get("__trial_index__", 0)) if mode == "seeds" else replay_seed % grid.seeds


def replay(config: dict, grid: Grid = None, replay_seed: int = 0, mode: str = "one-seed", names: tuple = ()) -> None:
    """The trainable: the recorded English dev curve of the proposed configuration, one drawn
    seed's or the seed mean. `names`: the metric names (epoch score, epoch, final score), passed in
    so the trial process does not import the task registry (seconds per trial on 2 cores)."""
    from ray import tune

    epoch_metric, epoch_attr, final_metric = names
    key = Grid.key(config["intermediate_task"], config.get("intermediate_lr", 0.0), config["target_lr"])
    rows = grid.runs[key]
    if mode == "seed-mean":
        draw, curve = -1, grid.mean_curve(key)
    elif mode in ("study-seed", "seeds") and any(r["seed"] == _seed_of(config, replay_seed, mode, grid) for r in rows):
        draw = next(i for i, r in enumerate(rows) if r["seed"] == _seed_of(config, replay_seed, mode, grid))
        curve = rows[draw]["en_dev"]
    else:  # one-seed (and study-seed where the configuration lost that seed's record)
        draw = random.Random(f"{replay_seed}/{tune.get_context().get_trial_id()}").randrange(len(rows))
        curve = rows[draw]["en_dev"]
    for epoch, score in enumerate(curve, start=1):
        # The last epoch carries the final record, as a real trial's does (a trial without it was stopped).
        final = {final_metric: score} if epoch == len(curve) else {}
        tune.report({epoch_metric: score, epoch_attr: epoch, "config_key": json.dumps(key), "drawn_seed": draw,
                     "seed_index": int(config.get("__trial_index__", 0)), **final})


def search_config(overrides: dict, replay_seed: int):
    """The study's search settings for one replay: its defaults, the strategy's overrides."""
    from xstilts.study.config import SearchConfig

    search = dataclasses.replace(SearchConfig(), seed=replay_seed, optuna_storage="none", **overrides)
    search.check()
    return search


def _recorder_class():
    from ray.tune import Callback

    class Recorder(Callback):
        """What each trial reported, kept in the driver (no per-trial result files)."""

        def __init__(self, seen: dict, metric: str, attr: str):
            self.seen, self.metric, self.attr = seen, metric, attr

        def on_trial_result(self, iteration, trials, trial, result, **info):
            # `trials` is the controller's list in creation order (trial ids are random hex).
            self.seen[trial.trial_id] = {"trial_id": trial.trial_id, "order": trials.index(trial),
                                         "key": tuple(json.loads(result["config_key"])),
                                         "seed_index": int(result.get("seed_index", 0)),
                                         "epochs": int(result[self.attr]), "final_dev": float(result[self.metric])}

    return Recorder


def _Recorder(seen: dict, metric: str, attr: str):
    return _recorder_class()(seen, metric, attr)


def run_strategy(grid: Grid, overrides: dict, replay_seed: int, work: Path, mode: str = "one-seed",
                 config_path: Path | None = None, trials: int | None = None) -> list[dict]:
    """One search, replayed: the trials in the order Tune created them, with what each reported.
    `config_path`: the study config whose search space the table covers (default: the recorded grid's);
    `trials`: the search's num_samples (default: as many as the grid has configurations; the grid
    sampler always runs them all)."""
    import ray.cloudpickle
    from ray import tune

    from xstilts.study.config import load_config
    from xstilts.study.runner import make_tuner
    from xstilts.study.search import SELECTION_METRIC, TIME_ATTR
    from xstilts.tasks.record_schema import FINAL_EN_DEV

    grid.repeats(mode)  # checks the mode
    if __name__ != "__main__":  # imported (tests): Ray's workers get this module by value
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    config = load_config(config_path or grid.config_path)
    config = dataclasses.replace(config, seeds=grid.seeds if mode == "seeds" else 1,
                                 num_samples=trials or len(grid.runs), max_concurrent_trials=2,
                                 search=search_config(overrides, replay_seed))
    trainable = tune.with_resources(tune.with_parameters(replay, grid=grid, replay_seed=replay_seed, mode=mode,
                                                         names=(SELECTION_METRIC, TIME_ATTR, FINAL_EN_DEV)),
                                    {"cpu": 0.5})
    seen: dict[str, dict] = {}
    tuner = make_tuner(trainable, config, 0, {}, str(work), [_Recorder(seen, SELECTION_METRIC, TIME_ATTR)])
    # One trial process for many trials (the replayed trials all ask for the same resources):
    # what this changes is process start-ups, not what the searcher or the scheduler sees.
    tuner._local_tuner._tune_config.reuse_actors = True
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # Tune's tables
        results = tuner.fit()
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} replayed trials failed, the first: {errors[0]!r}")
    trials = list(seen.values())
    return sorted(trials, key=lambda t: t["order"])


def cost_curve(grid: Grid, trials: list[dict], mode: str = "one-seed") -> list[tuple[int, float]]:
    """(cumulative cost, regret of the selection so far) after each trial, in creation order."""
    if mode == "seeds":
        return _seed_group_cost_curve(grid, trials)
    repeats = grid.repeats(mode)
    reference, seen, cost, best = grid.reference(), set(), 0, None
    curve = []
    for trial in trials:
        intermediate, intermediate_lr, _ = trial["key"]
        if intermediate != "none" and (intermediate, intermediate_lr) not in seen:
            seen.add((intermediate, intermediate_lr))
            cost += grid.intermediate_epochs * repeats
        cost += trial["epochs"] * repeats
        if trial["epochs"] == grid.target_epochs and (best is None or trial["final_dev"] > best["final_dev"]):
            best = trial  # completed trials only: a stopped one was not trained to the end
        regret = reference - grid.true_score(tuple(best["key"])) if best else float("inf")
        curve.append((cost, regret))
    return curve


def _seed_group_cost_curve(grid: Grid, trials: list[dict]) -> list[tuple[int, float]]:
    """`seeds` mode: the Repeater creates a group's seed trials one after the other, so the groups
    are consecutive runs of `grid.seeds` trials in creation order; a group is selectable (on its
    seeds' mean final dev) once every seed of it completed."""
    reference, trained, cost, best = grid.reference(), set(), 0, None
    curve = []
    for start in range(0, len(trials), grid.seeds):
        group = trials[start:start + grid.seeds]
        if len({tuple(t["key"]) for t in group}) != 1:
            raise ValueError(f"trials {start}-{start + len(group) - 1} are not one seed group: {[t['key'] for t in group]}")
        for trial in group:
            intermediate, intermediate_lr, _ = trial["key"]
            if intermediate != "none" and (intermediate, intermediate_lr, trial["seed_index"]) not in trained:
                trained.add((intermediate, intermediate_lr, trial["seed_index"]))
                cost += grid.intermediate_epochs
            cost += trial["epochs"]
            complete = len(group) == grid.seeds and all(t["epochs"] == grid.target_epochs for t in group)
            if trial is group[-1] and complete:
                mean = statistics.fmean(t["final_dev"] for t in group)
                if best is None or mean > best[0]:
                    best = (mean, tuple(trial["key"]))
            curve.append((cost, reference - grid.true_score(best[1]) if best else float("inf")))
    return curve


def cost_to_reach(curve: list[tuple[int, float]]) -> float:
    return next((cost for cost, regret in curve if regret <= WITHIN), float("inf"))


def quantile(values: list[float], q: float) -> float:
    """The inclusive (linear) quantile, with inf (never reached) as the largest value."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
    weight = position - math.floor(position)
    if weight == 0 or low == high:
        return low
    return high if math.isinf(high) else low + (high - low) * weight


def median_interval(ratios: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95 % percentile-bootstrap interval of the median over replays (is a median near the goal
    resolved against it at this many replays?)."""
    rng = random.Random(seed)
    medians = sorted(quantile(rng.choices(ratios, k=len(ratios)), 0.5) for _ in range(draws))
    return quantile(medians, 0.025), quantile(medians, 0.975)


def summarize(ratios: list[float], final_regrets: list[float] = ()) -> dict:
    """Median and interquartile range of cost-to-reach / grid cost, the fraction that reach, and
    the fraction whose last selection (after every trial) is still within reach: a search can
    select the right configuration early and lose it to a luckier seed later."""
    return {"median": quantile(ratios, 0.5), "q1": quantile(ratios, 0.25), "q3": quantile(ratios, 0.75),
            "median_interval": median_interval(ratios),
            "reached": sum(1 for r in ratios if not math.isinf(r)) / len(ratios), "replays": len(ratios),
            "final_within": (sum(1 for r in final_regrets if r <= WITHIN) / len(final_regrets)) if final_regrets
            else math.nan}


def regret_at(curve: list[tuple[int, float]], budget: float) -> float:
    """The regret of the selection once `budget` is spent (inf before any trial completed)."""
    return min((regret for cost, regret in curve if cost <= budget), default=float("inf"))


def plot(curves: dict[str, dict[str, list]], full_costs: dict[str, int], path: Path) -> None:
    """Median regret against cost / grid cost, one panel per mode (a budget where most replays
    have no completed trial yet is left blank)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    modes = [m for m in MODES if any(m in by_mode for by_mode in curves.values())]
    figure = Figure(figsize=(6.5 * len(modes), 4.4))
    for axes, mode in zip(figure.subplots(1, len(modes), squeeze=False)[0], modes):
        steps = [full_costs[mode] * i / 100 for i in range(1, 101)]
        for name, by_mode in curves.items():
            runs = by_mode.get(mode)
            if not runs:
                continue
            medians = []
            for budget in steps:
                at = [regret_at(run, budget) for run in runs]
                medians.append(quantile(at, 0.5) if sum(1 for a in at if not math.isinf(a)) * 2 > len(at) else math.nan)
            axes.plot([s / full_costs[mode] for s in steps], medians, label=f"{name} ({len(runs)})")
        axes.axhline(WITHIN, linestyle=":", color="grey")
        axes.set_title(f"{mode}: selection on {TITLES[mode]}")
        axes.set_xlabel("cost / full-grid cost")
        axes.set_ylabel("regret of the selection (points, median)")
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def table_digest(table: dict) -> str:
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()[:16]


def load_results(path: Path, digest: str) -> dict:
    """Replays already made against this table (the file of an earlier, possibly cut, run)."""
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    return saved.get("replays", {}) if saved.get("table") == digest else {}


def run_all(grid: Grid, strategies: dict, modes: list[str], seeds: range, replays: dict, out: Path, digest: str,
            started: float, trials: int | None = None) -> None:
    """Every replay not in `replays` yet, each written to `out` as it finishes, on one Ray runtime."""
    import ray

    for attempt in range(3):  # a busy machine can miss Ray's fixed 30 s start-up deadline
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises a plain Exception here
            ray.shutdown()
            if attempt == 2:
                raise
            print(f"Ray did not start ({exc}); trying again", flush=True)
            time.sleep(15)
    try:
        with tempfile.TemporaryDirectory() as work:
            # Seeds outermost: a run cut short still has every strategy at (almost) the same count.
            for seed in seeds:
                for mode in modes:
                    for name, overrides in strategies.items():
                        label = f"{mode}|{name}|{seed}"
                        if label not in replays:
                            made = run_strategy(grid, overrides, seed, Path(work) / f"{len(replays)}", mode,
                                                trials=trials)
                            replays[label] = cost_curve(grid, made, mode)
                            partial = out.with_name(out.name + ".part")  # a kill mid-write leaves the file whole
                            partial.write_text(json.dumps({"table": digest, "replays": replays}))
                            os.replace(partial, out)
                print(f"replay seed {seed} done [{time.time() - started:.0f} s]", flush=True)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="20 replay seeds per strategy and mode (default: 3)")
    parser.add_argument("--seeds", type=int, default=None, help="replay seeds per strategy and mode")
    parser.add_argument("--first-seed", type=int, default=0, help="run replay seeds from this one on (a run split "
                        "over processes: each runs a part, --no-run --include reads them all)")
    parser.add_argument("--table", default=str(TABLE), help="the recorded grid (record_grid.py)")
    parser.add_argument("--strategies", default=None, help="comma-separated subset of the strategies (default: all with "
                        "--full, else " + ", ".join(QUICK_STRATEGIES) + ")")
    parser.add_argument("--variants", action="store_true", help="also the candidate defaults: " + ", ".join(VARIANTS))
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    parser.add_argument("--trials", type=int, default=None, help="trials per search (default: as many as the grid "
                        "has configurations; a search that has not reached by then counts as never reaching)")
    parser.add_argument("--png", default=str(Path(__file__).resolve().parent / "search_efficiency.png"))
    parser.add_argument("--out", default=None, help="JSON of every replay's curve, continued if it exists "
                        "(default: search_efficiency_quick.json / _full.json in the system's temp folder)")
    parser.add_argument("--include", nargs="*", default=[], help="more replay files to read (a run split over processes)")
    parser.add_argument("--no-run", action="store_true", help="only summarize the replays the files hold")
    args = parser.parse_args()
    seeds = args.seeds or (20 if args.full else 3)
    table_path = Path(args.table)
    if not table_path.exists():
        sys.exit(f"no recorded grid at {table_path}: run search_spaces/grid_embedded.yaml, then benchmarks/record_grid.py")
    table = json.loads(table_path.read_text())
    grid = Grid(table)
    known = {**STRATEGIES, **VARIANTS}
    chosen = args.strategies or ",".join(STRATEGIES if args.full else QUICK_STRATEGIES)
    names = [n for n in chosen.split(",") if n] + (list(VARIANTS) if args.variants else [])
    modes = args.modes.split(",")
    unknown = [n for n in names if n not in known] + [m for m in modes if m not in MODES]
    if unknown:
        sys.exit(f"unknown strategy or mode: {', '.join(unknown)}")
    out = Path(args.out or Path(tempfile.gettempdir()) / f"search_efficiency_{'full' if args.full else 'quick'}.json")
    # Replays of another trial budget are other replays: the saved file is keyed by both.
    digest = table_digest(table) + (f"/{args.trials} trials" if args.trials else "")
    replays = load_results(out, digest)
    for extra in args.include:
        replays = {**load_results(Path(extra), digest), **replays}
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    # Ray starts its workers 15 nice levels below the driver; under `nice` on a busy machine the
    # replay's trial processes then barely run. They train nothing here: same priority as the driver.
    os.environ.setdefault("RAY_worker_niceness", "0")
    full_costs = {mode: grid.full_cost(mode) for mode in MODES}
    print(f"grid: {len(grid.runs)} configurations x {grid.seeds} seeds; full-grid cost {full_costs['one-seed']} epochs "
          f"({full_costs['seed-mean']} with every seed); reference true score {grid.reference():.2f}; "
          f"{args.trials or len(grid.runs)} trials per search, {seeds} replay seeds per strategy and mode; replays in {out} "
          f"({len(replays)} already there)", flush=True)
    started = time.time()
    if not args.no_run:
        run_all(grid, {name: known[name] for name in names}, modes, range(args.first_seed, seeds), replays, out, digest,
                started, args.trials)
    curves: dict[str, dict[str, list]] = {}
    summary: dict[tuple[str, str], dict] = {}
    for mode in modes:
        for name in names:
            runs = [[tuple(point) for point in replays[label]] for seed in range(seeds)
                    if (label := f"{mode}|{name}|{seed}") in replays]
            if not runs:
                continue
            curves.setdefault(name, {})[mode] = runs
            summary[name, mode] = s = summarize([cost_to_reach(c) / full_costs[mode] for c in runs],
                                                [c[-1][1] for c in runs])
            low, high = s["median_interval"]
            print(f"{mode:<9} {name:<34} cost-to-reach / grid: median {s['median']:.2f} [95 % {low:.2f}-{high:.2f}] "
                  f"(IQR {s['q1']:.2f}-{s['q3']:.2f}); reached in {s['reached']:.0%}, final selection within {WITHIN} in "
                  f"{s['final_within']:.0%} of {s['replays']} replays")
    if not summary:
        sys.exit("no replays to summarize")
    plot(curves, full_costs, Path(args.png))
    print(f"regret vs cost: {args.png}")
    headline = next((key for key in (("TPE+ASHA (default)", m) for m in ("seeds", *modes)) if key in summary),
                    next(iter(summary)))
    s = summary[headline]
    print(f"figure: median cost-to-reach / full grid, {headline[0]}, {headline[1]}: {s['median']:.2f} "
          f"(reached in {s['reached']:.0%} of {s['replays']} replays)")


if __name__ == "__main__":
    main()
