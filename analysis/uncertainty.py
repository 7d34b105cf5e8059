"""How sure a difference is: percentile-bootstrap intervals over training seeds.

A study with `seeds: N` trains every configuration N times. The table here takes, per target,
the baseline (`none`) and each intermediate task at its configuration with the best seed-mean
English dev score (the honest zero-shot selection), and gives the seed-mean all-language score,
its difference to the baseline and a 95 % interval of that difference: the two arms' seeds are
resampled independently with replacement (percentile bootstrap, 10,000 draws, seeded). A
difference whose interval excludes 0 is marked; the rest are "not resolved at this budget".
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

LEVEL = 0.95
DRAWS = 10_000


def _percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def bootstrap_delta(treated: list[float], baseline: list[float], draws: int = DRAWS, level: float = LEVEL,
                    seed: int = 0) -> tuple[float, float, float]:
    """(mean(treated) - mean(baseline), low, high): the percentile-bootstrap interval of the
    difference of means, each side resampled independently. One value per side gives a
    zero-width interval (nothing to resample: no evidence of noise, so say so elsewhere)."""
    if not treated or not baseline:
        raise ValueError("bootstrap_delta needs at least one value on each side")
    delta = sum(treated) / len(treated) - sum(baseline) / len(baseline)
    rng = random.Random(seed)
    samples = []
    for _ in range(draws):
        a = [treated[rng.randrange(len(treated))] for _ in treated]
        b = [baseline[rng.randrange(len(baseline))] for _ in baseline]
        samples.append(sum(a) / len(a) - sum(b) / len(b))
    samples.sort()
    tail = (1 - level) / 2
    return delta, _percentile(samples, tail), _percentile(samples, 1 - tail)


@dataclass
class SeedScores:
    """The completed seeds of one configuration of one arm (target, intermediate, hyperparameters)."""

    en_dev: list[float] = field(default_factory=list)
    all_languages: list[float] = field(default_factory=list)
    languages: list[dict[str, float]] = field(default_factory=list)  # per seed: language -> dev score
    # Seeds the scheduler stopped early (xstilts.study.seed_groups stops a configuration on its seeds'
    # mean; a seed that had already finished stays finished, and is not compared on its own).
    stopped: int = 0

    @property
    def en_dev_mean(self) -> float:
        return sum(self.en_dev) / len(self.en_dev)


@dataclass(frozen=True)
class DeltaRow:
    target: str
    arm: str
    seeds: int
    mean: float  # seed-mean all-language score
    delta: float | None  # to the baseline's
    low: float | None
    high: float | None

    @property
    def resolved(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)


NOT_RESOLVED = "not resolved at this budget"
ONE_SEED = f"{NOT_RESOLVED} (one seed per configuration: no interval; `seeds: 3` gives one)"


@dataclass(frozen=True)
class Interval:
    """A difference of seed means and its 95 % percentile-bootstrap interval."""

    delta: float
    low: float
    high: float

    @property
    def resolved(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        return f"{self.delta:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def seed_interval(treated: list[float], baseline: list[float], draws: int = DRAWS) -> Interval | None:
    """The interval of mean(treated) - mean(baseline) over seeds; None unless both sides have two
    or more seeds (one seed has no spread to resample: no evidence either way)."""
    if len(treated) < 2 or len(baseline) < 2:
        return None
    return Interval(*bootstrap_delta(treated, baseline, draws))


def best_configuration(configurations: dict[tuple, SeedScores]) -> SeedScores | None:
    """The configuration with the best seed-mean English dev score among those with scores and no
    seed stopped early."""
    scored = [s for s in configurations.values() if s.en_dev and s.all_languages and not s.stopped]
    return max(scored, key=lambda s: s.en_dev_mean, default=None)


def delta_rows(seed_scores: dict[tuple[str, str], dict[tuple, SeedScores]], baseline_arm: str,
               draws: int = DRAWS) -> list[DeltaRow]:
    """Per target, the baseline and every other arm at its selected configuration."""
    rows = []
    for target in sorted({target for target, _ in seed_scores}):
        base = best_configuration(seed_scores.get((target, baseline_arm), {}))
        for (row_target, arm), configurations in sorted(seed_scores.items()):
            if row_target != target:
                continue
            chosen = best_configuration(configurations)
            if chosen is None:
                continue
            mean = sum(chosen.all_languages) / len(chosen.all_languages)
            if arm == baseline_arm or base is None:
                rows.append(DeltaRow(target, arm, len(chosen.all_languages), mean, None, None, None))
                continue
            delta, low, high = bootstrap_delta(chosen.all_languages, base.all_languages, draws)
            rows.append(DeltaRow(target, arm, len(chosen.all_languages), mean, delta, low, high))
    return rows


# ------------------------------------------------------------------------------------------------
# Over examples: one trial per arm (no seeds needed), its dev examples resampled
# ------------------------------------------------------------------------------------------------

EXAMPLE_DRAWS = 2_000


def _ratio(numerators, denominators):
    import numpy as np

    return np.where(denominators > 0, 100.0 * numerators / np.where(denominators > 0, denominators, 1), 0.0)


def example_interval(treated: dict[str, list], baseline: dict[str, list], draws: int = EXAMPLE_DRAWS,
                     seed: int = 0) -> Interval | None:
    """The interval of (treated - baseline) on the mean over languages of the per-language metric
    (100 x sum of numerators / sum of denominators of the language's examples: a trial's
    final_examples.json), over the languages both have. Each language's examples are resampled
    with replacement; where both arms scored the same examples (same count: the same dev file and
    cap, in file order) with the same indices for both (a paired bootstrap, Koehn 2004), otherwise
    independently. Percentile interval, `draws` draws, seeded. None without a common language."""
    import numpy as np

    languages = sorted(set(treated) & set(baseline))
    if not languages:
        return None
    rng = np.random.default_rng(seed)
    point = np.zeros(1)
    samples = np.zeros(draws)
    for language in languages:
        t, b = np.asarray(treated[language], dtype=float), np.asarray(baseline[language], dtype=float)
        if not len(t) or not len(b):
            return None
        point += _ratio(t[:, 0].sum(), t[:, 1].sum()) - _ratio(b[:, 0].sum(), b[:, 1].sum())
        picks_t = rng.integers(0, len(t), size=(draws, len(t)))
        picks_b = picks_t if len(t) == len(b) else rng.integers(0, len(b), size=(draws, len(b)))
        samples += (_ratio(t[picks_t, 0].sum(1), t[picks_t, 1].sum(1))
                    - _ratio(b[picks_b, 0].sum(1), b[picks_b, 1].sum(1)))
    point, samples = point / len(languages), np.sort(samples / len(languages))
    tail = (1 - LEVEL) / 2
    return Interval(float(point[0]), _percentile(samples.tolist(), tail), _percentile(samples.tolist(), 1 - tail))


def example_table(summary, tracking_uri: str):
    """The report's table of each arm's difference to the baseline with an interval over the dev
    examples (English-dev-selected trials, one per arm and target), or None when no selected trial
    logged its per-example statistics (older trials, retrieval targets)."""
    from xstilts.analysis.tables import Table
    from xstilts.mlflow_store.runs import read_json_artifact
    from xstilts.tasks import NONE
    from xstilts.tasks.record_schema import EXAMPLE_STATS_ARTIFACT

    def stats(trial):
        found = read_json_artifact(tracking_uri, trial.run_id, EXAMPLE_STATS_ARTIFACT) if trial else None
        return found["languages"] if found else None

    rows = []
    for target in summary.targets:
        base_cell = summary.cell(NONE, target)
        base = stats(base_cell.selected if base_cell else None)
        if base is None:
            continue
        for arm in summary.intermediates:
            cell = summary.cell(arm, target)
            if arm == NONE or cell is None or cell.selected is None:
                continue
            mine = stats(cell.selected)
            interval = example_interval(mine, base) if mine else None
            if interval is None:
                continue
            verdict = ("gain" if interval.delta > 0 else "loss") if interval.resolved else NOT_RESOLVED
            rows.append([arm, target, str(len(set(mine) & set(base))), f"{interval.delta:+.2f}",
                         f"[{interval.low:+.2f}, {interval.high:+.2f}]", verdict])
    if not rows:
        return None
    return Table("example_deltas", "Differences to the baseline with intervals over the dev examples",
                 ["arm", "target", "languages", "delta", "95% interval", "verdict"], rows,
                 notes=[f"Each arm's English-dev-selected trial against {NONE}'s, on the mean over the languages both "
                        "scored of the per-language dev metric. Interval: percentile bootstrap over each language's dev "
                        f"examples ({EXAMPLE_DRAWS:,} draws; paired: the same resampled examples for both arms), so it "
                        "covers the evaluation sample's noise, not the training seed's (`seeds: N` gives that). "
                        "Retrieval targets (no per-example decomposition of BUCC's F1) are not listed."])


def seed_table(summary):
    """The report's table of deltas with intervals, or None when no selected configuration has
    two or more seeds (one seed per configuration: nothing to put an interval on)."""
    from xstilts.analysis.tables import Table
    from xstilts.tasks import NONE

    rows = delta_rows(summary.seed_scores, NONE)
    if not any(row.seeds >= 2 for row in rows):
        return None
    body = []
    for row in rows:
        if row.delta is None:
            body.append([row.arm, row.target, str(row.seeds), f"{row.mean:.2f}", "(baseline)" if row.arm == NONE else "–",
                         "–", "–"])
            continue
        verdict = ("gain" if row.delta > 0 else "loss") if row.resolved else NOT_RESOLVED
        body.append([row.arm, row.target, str(row.seeds), f"{row.mean:.2f}", f"{row.delta:+.2f}",
                     f"[{row.low:+.2f}, {row.high:+.2f}]", verdict])
    return Table("seed_deltas", "All-language score over seeds, and its difference to the baseline",
                 ["arm", "target", "seeds", "mean", "delta", "95% interval", "verdict"], body,
                 notes=[f"Each arm at its configuration with the best seed-mean English dev score; interval: "
                        f"percentile bootstrap over seeds ({DRAWS:,} draws, each arm resampled independently). "
                        "A difference is a finding only where its interval excludes 0."])
