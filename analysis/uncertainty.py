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
    """The configuration with the best seed-mean English dev score among those with scores."""
    scored = [s for s in configurations.values() if s.en_dev and s.all_languages]
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
