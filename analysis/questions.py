"""The analyses behind the research questions of search_spaces/ (docs/analysis.md), from a
`StudySummary` only: no second pass over the records, no second metric implementation (scores
are the logged per-language dev scores and all-language means of the English-dev-selected
trials; the aggregate over targets is `tables.xtreme_style_scores`, i.e.
`xstilts.tasks.xtreme_eval.xtreme_aggregate`).

An *arm* is one row of the study's tables: an intermediate choice (a task, `task@lang` or a
named mixture) together with how phase 3 trained (`target_train`: `english`, zero-shot, or
`translate_train`). The baseline arm is `none` with English target training. What each arm
trained on is read from the params every trial logs (docs of the config syntax:
intermediate_sources / intermediate_languages / intermediate_num_languages /
intermediate_sampling / intermediate_temperature / target_train).

- `family_gains`: per target and arm, the gain over the baseline per language, averaged over
  the languages of each family and of each distance bucket from English (tasks/languages.py).
- `returns_curve`: per target (and over all targets), the score against the number of languages
  in the intermediate data, the least-squares fit score = a + b ln(n), the gain per added
  language (observed between measured counts, and fitted: f(n+1) - f(n) = b ln(1 + 1/n)) and
  the first count from which it is below a threshold.
- `mixture_comparison`: English-only vs English + non-English vs non-English-only intermediates.
- `intermediate_types`: the gain over the baseline per type of intermediate task (NLI,
  extractive QA, multiple-choice QA, ...), e.g. NLI vs QA.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from xstilts.analysis.records import TrialRecord
from xstilts.analysis.tables import (ENGLISH, Cell, StudySummary, Table, _num, _signed,
                             xtreme_style_scores)
from xstilts.analysis.uncertainty import NOT_RESOLVED, ONE_SEED, Interval, SeedScores, best_configuration, seed_interval
from xstilts.tasks import NONE, UnknownTaskError, get_task
from xstilts.tasks.languages import distance_rank, language_info
# MLflow params of a trial that say what it trained on (written by the trainables; named once,
# in xstilts.tasks.record_schema).
from xstilts.tasks.record_schema import (FINAL_ALL_LANGUAGES, FINAL_ZERO_SHOT, PARAM_TARGET_TRAIN,
                                 PARAM_INTERMEDIATE_LANGUAGES as PARAM_LANGUAGES,
                                 PARAM_INTERMEDIATE_NUM_LANGUAGES as PARAM_NUM_LANGUAGES,
                                 PARAM_INTERMEDIATE_SAMPLING as PARAM_SAMPLING,
                                 PARAM_INTERMEDIATE_SOURCES as PARAM_SOURCES,
                                 PARAM_INTERMEDIATE_TEMPERATURE as PARAM_TEMPERATURE)
from xstilts.tasks.kinds import kind_of

DEFAULT_RETURNS_THRESHOLD = 0.5  # points of the score per added language
ALL_TARGETS = "all targets (XTREME-style)"
ENGLISH_ONLY, EN_PLUS, NON_ENGLISH_ONLY = "English only", "English + non-English", "non-English only"


# ------------------------------------------------------------------------------------------------
# Arms: what each row of the tables trained on
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arm:
    label: str  # the row label of the main tables (`intermediate` or `intermediate [translate_train]`)
    intermediate: str  # as written in the config
    target_train: str
    sources: tuple[str, ...] | None  # "task@lang"; () for none; None when the trial did not log them
    languages: tuple[str, ...] | None  # distinct languages of the sources, sorted
    sampling: str | None
    temperature: float | None

    @property
    def num_languages(self) -> int | None:
        return None if self.languages is None else len(self.languages)

    @property
    def is_baseline(self) -> bool:
        return self.intermediate == NONE and self.target_train == ENGLISH


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part for part in value.split(",") if part)


def _float(value: Any) -> float | None:
    try:
        return None if value in (None, "", "None") else float(value)
    except (TypeError, ValueError):
        return None


def arm_of(trial: TrialRecord, label: str) -> Arm:
    """The arm a trial belongs to, from its logged params. A study recorded before these params
    existed still reads: `none` has no sources, a registered task its training language."""
    params = trial.params
    intermediate = trial.intermediate_task
    sources, languages = _split(params.get(PARAM_SOURCES)), _split(params.get(PARAM_LANGUAGES))
    if intermediate == NONE:
        sources, languages = (), ()
    elif sources is None:
        sources = _sources_from_name(intermediate)
    if languages is None and sources is not None:
        languages = tuple(sorted({source.partition("@")[2] for source in sources}))
    count = _float(params.get(PARAM_NUM_LANGUAGES))
    if count is not None and languages is not None and int(count) != len(languages):
        languages = None  # inconsistent records: trust neither
    return Arm(label, intermediate, params.get(PARAM_TARGET_TRAIN) or ENGLISH, sources, languages,
               params.get(PARAM_SAMPLING) or None, _float(params.get(PARAM_TEMPERATURE)))


def _sources_from_name(name: str) -> tuple[str, ...] | None:
    task, _, language = name.partition("@")
    try:
        return (f"{task}@{language or get_task(task).train_language}",)
    except UnknownTaskError:
        return None  # a mixture name: its sources are only known from the params


@dataclass(frozen=True)
class ArmResult:
    """An arm's English-dev-selected trial for one target."""

    arm: Arm
    target: str
    trial: TrialRecord

    @property
    def all_languages(self) -> float | None:
        return self.trial.metrics.get(FINAL_ALL_LANGUAGES)

    @property
    def zero_shot(self) -> float | None:
        return self.trial.metrics.get(FINAL_ZERO_SHOT)

    def language_scores(self) -> dict[str, float]:
        return self.trial.language_scores()


def arm_results(summary: StudySummary, target: str) -> list[ArmResult]:
    """The arms with a selected (completed) trial for `target`, in the tables' row order."""
    found = []
    for label in summary.intermediates:
        cell: Cell | None = summary.cell(label, target)
        if cell is not None and cell.selected is not None:
            found.append(ArmResult(arm_of(cell.selected, label), target, cell.selected))
    return found


def _baseline(results: list[ArmResult]) -> ArmResult | None:
    return next((r for r in results if r.arm.is_baseline), None)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def arm_seeds(summary: StudySummary, target: str, label: str) -> SeedScores | None:
    """The completed seeds of the arm's configuration with the best seed-mean English dev score
    (the `seeds` option); what every interval of the research questions resamples."""
    return best_configuration(summary.seed_scores.get((target, label), {}))


def _seed_means(seeds: SeedScores | None, languages: list[str]) -> list[float]:
    """Per seed, the mean score over `languages` (seeds missing one of them left out)."""
    if seeds is None or not languages:
        return []
    return [statistics.fmean(scores[lang] for lang in languages) for scores in seeds.languages
            if all(lang in scores for lang in languages)]


def _interval_cell(interval: Interval) -> str:
    return interval.text() + (" *" if interval.resolved else "")


# ------------------------------------------------------------------------------------------------
# (i) Gains per language family and distance from English
# ------------------------------------------------------------------------------------------------

@dataclass
class GroupGains:
    grouping: str  # "family" or "distance"
    group: str
    languages: list[str]  # the target's languages in this group (that the baseline has a score for)
    baseline: float | None  # mean score of the baseline over those languages
    gains: dict[str, float | None]  # arm label -> mean gain over the baseline over those languages
    covered: dict[str, list[str]]  # arm label -> the languages the mean is over (both have a score)
    # arm label -> the seed-mean gain over those languages and its interval (None: fewer than 2 seeds)
    intervals: dict[str, Interval | None] = field(default_factory=dict)


@dataclass
class FamilyGains:
    target: str
    metric: str
    arms: list[str]  # arm labels, baseline excluded
    per_language: dict[str, dict[str, float]]  # arm label -> language -> gain
    rows: list[GroupGains]


def family_gains(summary: StudySummary, target: str) -> FamilyGains | None:
    """Per arm, the gain of its selected trial over the baseline's per language, averaged over
    the languages of each family and distance bucket; None without a baseline or another arm."""
    results = arm_results(summary, target)
    base = _baseline(results)
    others = [r for r in results if not r.arm.is_baseline]
    if base is None or not others:
        return None
    base_scores = base.language_scores()
    per_language = {r.arm.label: {lang: score - base_scores[lang] for lang, score in r.language_scores().items()
                                  if lang in base_scores} for r in others}
    base_seeds = arm_seeds(summary, target, base.arm.label)
    seeds = {r.arm.label: arm_seeds(summary, target, r.arm.label) for r in others}
    order = [lang for lang in summary.languages.get(target, []) if lang in base_scores]
    order += sorted(set(base_scores) - set(order))
    rows = []
    for grouping, key, rank in (("distance", lambda l: language_info(l).distance, distance_rank),
                                ("family", lambda l: language_info(l).family, None)):
        groups: dict[str, list[str]] = {}
        for lang in order:
            groups.setdefault(key(lang), []).append(lang)
        names = sorted(groups, key=rank) if rank else sorted(groups, key=lambda g: (g != language_info("en").family, g))
        for group in names:
            languages = groups[group]
            gains, covered, intervals = {}, {}, {}
            for label, found in per_language.items():
                covered[label] = [lang for lang in languages if lang in found]
                gains[label] = _mean([found[lang] for lang in covered[label]])
                intervals[label] = seed_interval(_seed_means(seeds[label], covered[label]),
                                                 _seed_means(base_seeds, covered[label]))
            rows.append(GroupGains(grouping, group, languages, _mean([base_scores[l] for l in languages]), gains, covered,
                                   intervals))
    return FamilyGains(target, summary.metrics.get(target, "?"), [r.arm.label for r in others], per_language, rows)


def varies_target_train(summary: StudySummary) -> bool:
    seen = {arm_of(c.selected, label).target_train for (label, _), c in summary.cells.items() if c.selected is not None}
    return ENGLISH in seen and len(seen) >= 2  # zero-shot against translate_train and/or per_language


def show_family_section(summary: StudySummary) -> bool:
    """Translate-train vs zero-shot is the question, or the targets' languages span several
    families (a real multilingual study; the synthetic languages are one family)."""
    if varies_target_train(summary):
        return True
    families = {language_info(lang).family for langs in summary.languages.values() for lang in langs if lang != "en"}
    return len(families) >= 2 and any(family_gains(summary, t) is not None for t in summary.targets)


def _coverage(row: GroupGains, label: str) -> str:
    """" (2/3)" when the arm has scores for only some of the row's languages."""
    covered = len(row.covered[label])
    return "" if covered in (0, len(row.languages)) else f" ({covered}/{len(row.languages)})"


def family_findings(result: FamilyGains, grouping: str) -> str:
    """The section's conclusion: only the group gains whose seed interval excludes 0."""
    rows = [r for r in result.rows if r.grouping == grouping]
    found = [(row.group, label, i) for row in rows for label in result.arms if (i := row.intervals.get(label)) is not None]
    if not found:
        return f"Conclusion: {ONE_SEED}."
    resolved = [f"{label} on {group}: {'gain' if i.delta > 0 else 'loss'} {i.text()}" for group, label, i in found
                if i.resolved]
    return ("Conclusion (95 % intervals over seeds): " + ("; ".join(resolved) if resolved else "none")
            + (f"; every other group: {NOT_RESOLVED}." if len(resolved) < len(found) else "."))


def family_table(result: FamilyGains, grouping: str) -> Table:
    rows = []
    for row in (r for r in result.rows if r.grouping == grouping):
        rows.append([row.group, " ".join(row.languages), _num(row.baseline)]
                    + [(_interval_cell(i) if (i := row.intervals.get(label)) is not None else _signed(row.gains[label]))
                       + _coverage(row, label) for label in result.arms])
    what = "distance from English" if grouping == "distance" else "language family"
    return Table(
        f"{grouping}_gains_{result.target}", f"{result.target}: gain over the zero-shot baseline by {what}",
        [what, "languages", f"{NONE} (baseline)"] + result.arms, rows,
        notes=[f"Dev {result.metric} of each arm's English-dev-selected trial minus the baseline's ({NONE}, English "
               "target training), per language, averaged over the languages of the row that both have a score for "
               "((2/3): the arm has scores for 2 of the row's 3 languages). "
               "Arms marked [translate_train] trained phase 3 on the training sets of all the target's languages "
               "that have one (not zero-shot); [per_language] trained one model per language on that language's "
               "training set only, each language scored by its own model.",
               "Groups: tasks/languages.py (families as in Glottolog/WALS; distance: source = English, close = "
               "Germanic and Romance, medium = other Indo-European, distant = other families; synthetic languages "
               "by their shared vocabulary with English).",
               "With seeds (`seeds: N`), a cell is the seed-mean gain of the arm's best seed-mean configuration over "
               "the baseline's, with its 95 % bootstrap interval over seeds; * = the interval excludes 0.",
               family_findings(result, grouping)],
    )


# ------------------------------------------------------------------------------------------------
# (ii) Diminishing returns: score against the number of intermediate languages
# ------------------------------------------------------------------------------------------------

@dataclass
class LogFit:
    """score = a + b ln(n), least squares over the (n, score) points."""

    a: float
    b: float
    r2: float | None  # None when every score is the same

    def __call__(self, n: float) -> float:
        return self.a + self.b * math.log(n)

    def text(self, a_digits: int = 3, b_digits: int = 3) -> str:
        sign = "+" if self.b >= 0 else "−"
        return f"{self.a:.{a_digits}f} {sign} {abs(self.b):.{b_digits}f} ln(n)"

    def marginal(self, n: int) -> float:
        """The fitted gain of going from n to n + 1 languages."""
        return self.b * math.log1p(1.0 / n)

    def threshold_point(self, threshold: float) -> int:
        """The smallest n >= 1 whose fitted gain for one more language is below `threshold`:
        b ln(1 + 1/n) < t  <=>  n > 1 / (e^(t/b) - 1) for b > 0; n = 1 when b <= 0."""
        if not threshold > 0:
            raise ValueError(f"the returns threshold must be > 0, got {threshold}")
        if self.b <= 0 or threshold / self.b > 700:  # no gain at all, or below the threshold at once
            return 1
        n = max(1, math.floor(1.0 / math.expm1(threshold / self.b)) + 1)
        while n > 1 and self.marginal(n - 1) < threshold:  # float rounding at the boundary
            n -= 1
        while self.marginal(n) >= threshold:
            n += 1
        return n


def fit_log(ns: list[float], scores: list[float]) -> LogFit | None:
    """Least squares of score = a + b ln(n) (numpy); None with fewer than 2 distinct n."""
    if len(set(ns)) < 2:
        return None
    x = np.log(np.asarray(ns, dtype=float))
    y = np.asarray(scores, dtype=float)
    design = np.column_stack([np.ones_like(x), x])
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = float(np.sum((y - (a + b * x)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return LogFit(float(a), float(b), None if total == 0 else 1.0 - residual / total)


@dataclass
class ReturnsPoint:
    n: int
    score: float  # mean over the arms with n languages of their selected trial's score
    arms: list[str]
    gain: float | None  # score - the baseline's (0 languages)
    observed_marginal: float | None = None  # (score at the next n - score) / (next n - n)
    fitted_marginal: float | None = None  # f(n + 1) - f(n)
    # the observed marginal over seeds (the seeds of every arm with n, and with the next n, pooled)
    marginal_interval: Interval | None = None


@dataclass
class ReturnsCurve:
    target: str  # a target task, or ALL_TARGETS
    metric: str
    baseline: float | None  # `none`'s score (0 languages)
    points: list[ReturnsPoint]  # n >= 1, increasing
    fit: LogFit | None
    threshold: float
    observed_point: int | None  # first measured n whose gain per added language (to the next n) < threshold
    fitted_point: int | None  # first n >= 1 whose fitted gain for one more language < threshold
    skipped: list[str] = field(default_factory=list)  # arms left out (translate_train, unknown languages)

    @property
    def observed_resolved(self) -> bool:
        """The observed threshold point is a finding: its gain per language is below the
        threshold with 95 % confidence (the interval's upper end, per language, is below it)."""
        point = next((p for p in self.points if p.n == self.observed_point), None)
        return point is not None and point.marginal_interval is not None and point.marginal_interval.high < self.threshold

    def conclusion(self) -> str:
        if self.observed_point is None:
            return "observed: never below the threshold between the measured counts"
        if self.observed_resolved:
            point = next(p for p in self.points if p.n == self.observed_point)
            return (f"observed: below the threshold from n = {self.observed_point} on (gain per language "
                    f"{point.marginal_interval.text()}, 95 % interval over seeds)")
        if next(p for p in self.points if p.n == self.observed_point).marginal_interval is None:
            return f"observed: from n = {self.observed_point} on as measured, {ONE_SEED}"
        return f"observed: from n = {self.observed_point} on as measured, {NOT_RESOLVED} (its interval reaches the threshold)"


def _curve(target: str, metric: str, scored: list[tuple[Arm, float]], baseline: float | None,
           threshold: float, skipped: list[str], seeds: dict[str, list[float]] | None = None) -> ReturnsCurve | None:
    """`seeds`: arm label -> its seeds' scores (for the marginals' intervals; none over all targets)."""
    by_n: dict[int, list[tuple[str, float]]] = {}
    pooled: dict[int, list[float]] = {}
    for arm, score in scored:
        by_n.setdefault(arm.num_languages, []).append((arm.label, score))
        pooled.setdefault(arm.num_languages, []).extend((seeds or {}).get(arm.label, []))
    if len(by_n) < 2:
        return None
    points = [ReturnsPoint(n, statistics.fmean(s for _, s in entries), [label for label, _ in entries], None)
              for n, entries in sorted(by_n.items())]
    fit = fit_log([p.n for p in points], [p.score for p in points])
    observed_point = None
    for point, following in zip(points, points[1:]):
        point.observed_marginal = (following.score - point.score) / (following.n - point.n)
        between = seed_interval(pooled[following.n], pooled[point.n])
        if between is not None:
            steps = following.n - point.n
            point.marginal_interval = Interval(between.delta / steps, between.low / steps, between.high / steps)
        if observed_point is None and point.observed_marginal < threshold:
            observed_point = point.n
    for point in points:
        point.gain = None if baseline is None else point.score - baseline
        point.fitted_marginal = fit.marginal(point.n)
    return ReturnsCurve(target, metric, baseline, points, fit, threshold, observed_point,
                        fit.threshold_point(threshold), skipped)


def returns_curves(summary: StudySummary, threshold: float = DEFAULT_RETURNS_THRESHOLD) -> list[ReturnsCurve]:
    """One curve per target with >= 2 distinct language counts among its zero-shot (english)
    intermediate arms, and one over all targets on the XTREME-style score when there are
    several targets. Score: the all-language dev mean of each arm's English-dev-selected trial."""
    if not threshold > 0:
        raise ValueError(f"the returns threshold must be > 0, got {threshold}")
    curves = []
    for target in summary.targets:
        results = arm_results(summary, target)
        base = _baseline(results)
        scored, skipped, seeds = [], [], {}
        for r in results:
            if r.arm.is_baseline:
                continue
            if r.arm.target_train != ENGLISH or not r.arm.num_languages or r.all_languages is None:
                skipped.append(r.arm.label)
                continue
            scored.append((r.arm, r.all_languages))
            found = arm_seeds(summary, target, r.arm.label)
            seeds[r.arm.label] = found.all_languages if found else []
        curve = _curve(target, summary.metrics.get(target, "?"), scored, base.all_languages if base else None,
                       threshold, skipped, seeds)
        if curve is not None:
            curves.append(curve)
    if len(curves) >= 2:
        xtreme = xtreme_style_scores(summary)
        arms = {}
        for (label, _), cell in summary.cells.items():
            if cell.selected is not None and label not in arms:
                arms[label] = arm_of(cell.selected, label)
        # Only arms with a selected trial on every target: an aggregate over fewer targets is
        # another number, not a point of the same curve.
        complete = {label for label, x in xtreme.items() if len(x["targets"]) == len(summary.targets)}
        scored, skipped = [], []
        for label, arm in arms.items():
            if arm.is_baseline:
                continue
            if label in complete and arm.target_train == ENGLISH and arm.num_languages and xtreme[label]["score"] is not None:
                scored.append((arm, xtreme[label]["score"]))
            else:
                skipped.append(label)
        baseline = xtreme[NONE]["score"] if NONE in complete else None
        curve = _curve(ALL_TARGETS, "XTREME-style", scored, baseline, threshold, sorted(skipped))
        if curve is not None:
            curves.append(curve)
    return curves


def returns_table(curve: ReturnsCurve) -> Table:
    rows = []
    if curve.baseline is not None:
        rows.append(["0", f"{NONE} (baseline)", _num(curve.baseline), "–", "–", "–"])
    for p in curve.points:
        observed = _signed(p.observed_marginal) if p.marginal_interval is None else \
            f"{_signed(p.observed_marginal)} (seeds: {p.marginal_interval.text()})"
        rows.append([str(p.n), ", ".join(p.arms), _num(p.score), _signed(p.gain), observed, _signed(p.fitted_marginal)])
    fit = curve.fit
    notes = [
        f"Score: the all-language dev mean ({curve.metric}) of each arm's English-dev-selected trial"
        + (" (XTREME-style: xstilts.tasks.xtreme_eval's aggregation over the targets)" if curve.target == ALL_TARGETS else "")
        + "; n = intermediate_num_languages (distinct languages of the intermediate data, English included); "
          "arms with the same n are averaged. Observed gain per added language: to the next measured n.",
        f"Least-squares fit over the points: score = {fit.text()}"
        + (f", R² = {fit.r2:.3f}" if fit.r2 is not None else "")
        + (" (two counts: the fit passes through both)" if len(curve.points) == 2 else "")
        + "; fitted gain per added language = b ln(1 + 1/n).",
        f"Threshold {curve.threshold:g} points per added language: fitted gain below it from n = {curve.fitted_point} "
        f"on (the fit has no interval); {curve.conclusion()}.",
    ]
    if any(p.marginal_interval for p in curve.points):
        notes.append("Intervals of the observed gain per language: 95 % bootstrap over the seeds of the arms at n and "
                     "at the next n (each arm at its best seed-mean configuration; arms with the same n pooled).")
    if curve.skipped:
        notes.append(f"Not on the curve (translate_train, languages not logged, or not every target): "
                     f"{', '.join(curve.skipped)}.")
    return Table(f"returns_{curve.target}", f"{curve.target}: score against languages in the intermediate data",
                 ["n languages", "intermediate(s)", "score", f"Δ vs {NONE}", "observed Δ per language",
                  "fitted Δ per language"], rows, notes=notes)


# ------------------------------------------------------------------------------------------------
# (iii) English only vs English + non-English intermediate data
# ------------------------------------------------------------------------------------------------

def data_kind(arm: Arm) -> str | None:
    if arm.languages is None or not arm.languages:
        return None
    if set(arm.languages) == {"en"}:
        return ENGLISH_ONLY
    return EN_PLUS if "en" in arm.languages else NON_ENGLISH_ONLY


def _english_sources(arm: Arm) -> frozenset[str]:
    return frozenset(s for s in arm.sources or () if s.endswith("@en"))


@dataclass
class MixtureRow:
    arm: Arm
    kind: str
    all_languages: float | None
    zero_shot: float | None
    delta_none: float | None
    reference: str | None  # the English-only arm with the same English sources
    delta_reference: float | None


@dataclass
class MixtureComparison:
    target: str
    metric: str
    rows: list[MixtureRow]
    kind_means: dict[str, dict[str, float | None]]  # kind -> {"all_languages", "delta_none", "arms"}


def mixture_comparison(summary: StudySummary, target: str) -> MixtureComparison | None:
    """None unless the target has both an English-only arm and one with non-English data."""
    results = [r for r in arm_results(summary, target) if r.arm.target_train == ENGLISH]
    base = _baseline(results)
    kinds = {r.arm.label: data_kind(r.arm) for r in results if not r.arm.is_baseline}
    if ENGLISH_ONLY not in kinds.values() or not {EN_PLUS, NON_ENGLISH_ONLY} & set(kinds.values()):
        return None
    english_only = {_english_sources(r.arm): r for r in results if kinds.get(r.arm.label) == ENGLISH_ONLY}
    rows = []
    for r in results:
        kind = kinds.get(r.arm.label)
        if kind is None:
            continue
        reference = english_only.get(_english_sources(r.arm)) if kind != ENGLISH_ONLY else None
        rows.append(MixtureRow(
            r.arm, kind, r.all_languages, r.zero_shot,
            _diff(r.all_languages, base.all_languages if base else None),
            reference.arm.label if reference else None,
            _diff(r.all_languages, reference.all_languages) if reference else None,
        ))
    order = (ENGLISH_ONLY, EN_PLUS, NON_ENGLISH_ONLY)
    rows.sort(key=lambda row: order.index(row.kind))
    kind_means = {}
    for kind in order:
        members = [row for row in rows if row.kind == kind]
        if members:
            kind_means[kind] = {
                "arms": len(members),
                "all_languages": _mean([m.all_languages for m in members if m.all_languages is not None]),
                "delta_none": _mean([m.delta_none for m in members if m.delta_none is not None]),
            }
    return MixtureComparison(target, summary.metrics.get(target, "?"), rows, kind_means)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def mixture_table(result: MixtureComparison) -> Table:
    rows, classes = [], []
    for row in result.rows:
        arm = row.arm
        sampling = "–" if not arm.sampling or len(arm.sources or ()) < 2 else (
            f"T={arm.temperature:g}" if arm.sampling == "temperature" and arm.temperature is not None else arm.sampling)
        rows.append([arm.label, row.kind, ", ".join(arm.sources or ()), sampling, _num(row.all_languages),
                     _num(row.zero_shot), _signed(row.delta_none), row.reference or "–", _signed(row.delta_reference)])
        classes.append("")
    for kind, means in result.kind_means.items():
        rows.append([f"mean: {kind}", f"{means['arms']} arm(s)", "", "", _num(means["all_languages"]), "",
                     _signed(means["delta_none"]), "", ""])
        classes.append("chance")
    return Table(
        f"mixtures_{result.target}", f"{result.target}: English-only vs English + non-English intermediate data",
        ["intermediate", "data", "sources", "sampling", "all languages", "zero-shot", f"Δ vs {NONE}",
         "English-only reference", "Δ vs reference"], rows,
        notes=["all languages / zero-shot: the all-language and non-English dev means of the arm's English-dev-selected "
               "trial; the reference is the English-only intermediate with the same English sources (e.g. mnli for "
               "[mnli, xnli@de]). Sampling: how a mixture shares its steps out among its sources "
               "(proportional to size, or temperature T: p ~ n^(1/T))."],
        row_classes=classes,
    )


# ------------------------------------------------------------------------------------------------
# (iv) Intermediate tasks by type (NLI vs QA, ...)
# ------------------------------------------------------------------------------------------------

_QA_TYPES = ("extractive QA", "multiple-choice QA")


def task_type(task_name: str) -> str:
    try:
        task = get_task(task_name)
    except UnknownTaskError:
        return "unknown"
    return kind_of(task).task_type(task)


def arm_type(arm: Arm) -> str | None:
    if arm.intermediate == NONE:
        return None
    names = {s.partition("@")[0] for s in arm.sources} if arm.sources else {arm.intermediate.partition("@")[0]}
    types = {task_type(name) for name in names}
    return types.pop() if len(types) == 1 else "mixed (" + " + ".join(sorted(types)) + ")"


@dataclass
class TypeGains:
    types: list[str]
    targets: list[str]
    gains: dict[str, dict[str, float | None]]  # type -> target -> mean Δ all-language vs none
    arms: dict[str, dict[str, list[str]]]  # type -> target -> arm labels averaged
    best: dict[str, dict[str, str | None]]  # type -> target -> best arm of the type (by Δ)


def intermediate_types(summary: StudySummary) -> TypeGains | None:
    """The gain over the baseline (all-language dev mean of the selected trials), averaged over
    the zero-shot arms of each intermediate task type; None unless there are two or more types,
    one of them QA (extractive or multiple-choice)."""
    gains: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for target in summary.targets:
        results = arm_results(summary, target)
        base = _baseline(results)
        if base is None or base.all_languages is None:
            continue
        for r in results:
            kind = arm_type(r.arm)
            if kind is None or r.arm.target_train != ENGLISH or r.all_languages is None:
                continue
            gains.setdefault(kind, {}).setdefault(target, []).append((r.arm.label, r.all_languages - base.all_languages))
    # The question is NLI vs QA: without a QA type the rows would repeat the main table's.
    if len(gains) < 2 or not any(kind in _QA_TYPES for kind in gains):
        return None
    types = sorted(gains)
    targets = [t for t in summary.targets if any(t in per for per in gains.values())]
    return TypeGains(
        types, targets,
        {k: {t: _mean([g for _, g in gains[k].get(t, [])]) for t in targets} for k in types},
        {k: {t: [label for label, _ in gains[k].get(t, [])] for t in targets} for k in types},
        {k: {t: (max(gains[k][t], key=lambda e: e[1])[0] if gains[k].get(t) else None) for t in targets} for k in types},
    )


def best_type(result: TypeGains, target: str) -> str:
    """The type with the largest mean gain on `target`; "tie (A, B)" when types share the top
    value as shown (two decimals), "none" when every type is at or below the baseline."""
    scored = {k: round(g, 2) for k in result.types if (g := result.gains[k][target]) is not None}
    if not scored:
        return "–"
    top = max(scored.values())
    leaders = [k for k, g in scored.items() if g == top]
    if top <= 0:
        return f"none (no type beats {NONE})"
    return leaders[0] if len(leaders) == 1 else "tie (" + ", ".join(leaders) + ")"


def type_conclusion(summary: StudySummary, result: TypeGains, target: str) -> str:
    """The NLI-vs-QA answer for `target`: the leading type only where the seed interval of its best
    arm against the runner-up type's best arm excludes 0."""
    ranked = sorted(((g, k) for k in result.types if (g := result.gains[k][target]) is not None), reverse=True)
    if len(ranked) < 2:
        return best_type(result, target)
    first, second = ranked[0][1], ranked[1][1]
    seeds = [arm_seeds(summary, target, result.best[k][target]) for k in (first, second)]
    interval = seed_interval(*[found.all_languages if found else [] for found in seeds])
    if interval is None:
        return f"{first} ahead of {second} as measured; {ONE_SEED}"
    comparison = f"{first}'s best arm vs {second}'s: {interval.text()}"
    if not interval.resolved:
        return f"{NOT_RESOLVED} ({comparison})"
    return f"{first if interval.delta > 0 else second} ({comparison})"


def types_table(result: TypeGains, summary: StudySummary | None = None) -> Table:
    rows = []
    for kind in result.types:
        row = [kind]
        for target in result.targets:
            row += [_signed(result.gains[kind][target]), str(len(result.arms[kind][target])),
                    result.best[kind][target] or "–"]
        rows.append(row)
    winners = [f"{target}: {type_conclusion(summary, result, target) if summary else best_type(result, target)}"
               for target in result.targets if any(result.gains[k][target] is not None for k in result.types)]
    return Table(
        "intermediate_types", "Intermediate tasks by type: mean gain over the baseline",
        ["type"] + ["Δ mean", "arms", "best"] * len(result.targets), rows,
        groups=[(t, 3) for t in result.targets],
        notes=[f"Δ: all-language dev mean of each intermediate's English-dev-selected trial minus {NONE}'s, averaged "
               "over the intermediates of the type (zero-shot arms only); best: the type's intermediate with the "
               "largest Δ. Types from tasks/: NLI = 3-way entailment classification; extractive QA = span QA; "
               "multiple-choice QA = choice scoring.",
               "Best type per target (a type is named only where the 95 % interval over seeds of its best arm "
               "against the next type's best arm excludes 0): " + ("; ".join(winners) if winners else "–") + "."],
    )


# ------------------------------------------------------------------------------------------------
# Everything, as JSON
# ------------------------------------------------------------------------------------------------

def questions_json(summary: StudySummary, threshold: float = DEFAULT_RETURNS_THRESHOLD) -> dict[str, Any]:
    families = {t: f for t in summary.targets if (f := family_gains(summary, t)) is not None} \
        if show_family_section(summary) else {}
    mixtures = {t: m for t in summary.targets if (m := mixture_comparison(summary, t)) is not None}
    types = intermediate_types(summary)
    return {
        "family_gains": {t: {"arms": f.arms, "per_language": f.per_language,
                             "groups": [asdict(row) for row in f.rows],
                             "conclusion": {g: family_findings(f, g) for g in ("distance", "family")}}
                         for t, f in families.items()},
        "returns": [{"target": c.target, "metric": c.metric, "baseline": c.baseline, "threshold": c.threshold,
                     "fit": {"a": c.fit.a, "b": c.fit.b, "r2": c.fit.r2},
                     "points": [asdict(p) for p in c.points], "observed_point": c.observed_point,
                     "fitted_point": c.fitted_point, "observed_resolved": c.observed_resolved,
                     "conclusion": c.conclusion(), "skipped": c.skipped}
                    for c in returns_curves(summary, threshold)],
        "mixtures": {t: {"rows": [{"arm": r.arm.label, "kind": r.kind, "sources": list(r.arm.sources or ()),
                                   "sampling": r.arm.sampling, "temperature": r.arm.temperature,
                                   "all_languages": r.all_languages, "zero_shot": r.zero_shot,
                                   "delta_none": r.delta_none, "reference": r.reference,
                                   "delta_reference": r.delta_reference} for r in m.rows],
                         "kind_means": m.kind_means} for t, m in mixtures.items()},
        "intermediate_types": None if types is None else {"gains": types.gains, "arms": types.arms, "best": types.best,
                                                     "best_type": {t: best_type(types, t) for t in types.targets},
                                                     "conclusion": {t: type_conclusion(summary, types, t)
                                                                    for t in types.targets}},
    }
