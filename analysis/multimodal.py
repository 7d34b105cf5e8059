"""The multimodal question (search_spaces/multimodal_nli.yaml): does English (text-only)
intermediate training help zero-shot cross-lingual visual NLI and visual reasoning (IGLUE's
XVNLI and MaRVL, or the embedded default's synthetic_xvnli)?

For every target of kind `multimodal_classification` and every zero-shot intermediate arm: the
difference of its English-dev-selected trial to the `none` baseline's, per language and on the
mean over the zero-shot languages (every language but English). With the `seeds` option each
difference also gets the 95 % percentile-bootstrap interval over seeds
(`xstilts.analysis.uncertainty.bootstrap_delta`, through `seed_interval`: each arm at its
configuration with the best seed-mean English dev score, seeds resampled per arm); a difference
is called a gain or a loss only where its interval excludes 0. Reads the `StudySummary` only.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from xstilts.analysis.questions import arm_results, arm_seeds
from xstilts.analysis.tables import ENGLISH, StudySummary, Table, _num, _signed
from xstilts.analysis.uncertainty import NOT_RESOLVED, ONE_SEED, Interval, seed_interval
from xstilts.tasks import NONE, UnknownTaskError, get_task

KIND = "multimodal_classification"
ZERO_SHOT = "zero-shot mean"


def multimodal_targets(summary: StudySummary) -> list[str]:
    """The study's targets of kind multimodal_classification (unknown task names are skipped)."""
    found = []
    for target in summary.targets:
        try:
            if get_task(target).kind == KIND:
                found.append(target)
        except UnknownTaskError:
            continue
    return found


@dataclass
class ArmDeltas:
    arm: str
    scores: dict[str, float]  # language (and ZERO_SHOT) -> the arm's score
    deltas: dict[str, float | None]  # language (and ZERO_SHOT) -> score minus the baseline's
    intervals: dict[str, Interval | None] = field(default_factory=dict)  # None: fewer than 2 seeds per arm
    seeds: int = 1

    def verdict(self, key: str = ZERO_SHOT) -> str:
        interval = self.intervals.get(key)
        if interval is None:
            return ONE_SEED
        if not interval.resolved:
            return NOT_RESOLVED
        return "gain" if interval.delta > 0 else "loss"


@dataclass
class MultimodalDeltas:
    target: str
    metric: str
    languages: list[str]  # the target's languages the baseline has a score for, its order
    zero_shot_languages: list[str]
    baseline: dict[str, float]  # language (and ZERO_SHOT) -> none's score
    chance: dict[str, float]
    arms: list[ArmDeltas]


def _zero_shot_mean(scores: dict[str, float], languages: list[str]) -> float | None:
    values = [scores[lang] for lang in languages if lang in scores]
    return statistics.fmean(values) if values and len(values) == len(languages) else None


def _per_seed(seeds, languages: list[str], zero_shot: list[str]) -> dict[str, list[float]]:
    """Per key (language, ZERO_SHOT): the value of each completed seed."""
    if seeds is None:
        return {}
    values: dict[str, list[float]] = {}
    for scores in seeds.languages:
        for lang in languages:
            if lang in scores:
                values.setdefault(lang, []).append(scores[lang])
        mean = _zero_shot_mean(scores, zero_shot)
        if mean is not None:
            values.setdefault(ZERO_SHOT, []).append(mean)
    return values


def multimodal_deltas(summary: StudySummary, target: str) -> MultimodalDeltas | None:
    """Every zero-shot arm against `none` on `target`; None without a baseline trial."""
    results = arm_results(summary, target)
    base = next((r for r in results if r.arm.is_baseline), None)
    if base is None:
        return None
    base_scores = base.language_scores()
    try:
        train_language = get_task(target).train_language
    except UnknownTaskError:
        train_language = "en"
    languages = [lang for lang in summary.languages.get(target, []) if lang in base_scores]
    zero_shot = [lang for lang in languages if lang != train_language]
    baseline = {**base_scores, ZERO_SHOT: _zero_shot_mean(base_scores, zero_shot)}
    base_seeds = _per_seed(arm_seeds(summary, target, base.arm.label), languages, zero_shot)
    arms = []
    for result in results:
        if result.arm.is_baseline or result.arm.target_train != ENGLISH:
            continue
        scores = result.language_scores()
        scores = {**scores, ZERO_SHOT: _zero_shot_mean(scores, zero_shot)}
        keys = languages + [ZERO_SHOT]
        deltas = {k: (scores[k] - baseline[k] if scores.get(k) is not None and baseline.get(k) is not None else None)
                  for k in keys}
        seeds = arm_seeds(summary, target, result.arm.label)
        per_seed = _per_seed(seeds, languages, zero_shot)
        intervals = {k: seed_interval(per_seed.get(k, []), base_seeds.get(k, [])) for k in keys}
        arms.append(ArmDeltas(result.arm.label, scores, deltas, intervals, len(seeds.en_dev) if seeds else 1))
    return MultimodalDeltas(target, summary.metrics.get(target, "accuracy"), languages, zero_shot, baseline,
                            summary.chance.get(target, {}), arms)


def _cell(delta: float | None, interval: Interval | None) -> str:
    if delta is None:
        return "–"
    if interval is None:
        return _signed(delta)
    return interval.text() + (" *" if interval.resolved else "")


def conclusion(result: MultimodalDeltas) -> str:
    """One sentence per arm: the zero-shot mean difference and what the seeds say of it."""
    if not result.arms:
        return f"{result.target}: no intermediate arm besides {NONE} completed."
    parts = []
    for arm in result.arms:
        delta = arm.deltas.get(ZERO_SHOT)
        helped = [lang for lang in result.zero_shot_languages if (arm.deltas.get(lang) or 0) > 0]
        verdict = arm.verdict()
        text = (f"{arm.arm} vs {NONE}: zero-shot mean {_signed(delta)} points "
                f"(higher in {len(helped)} of {len(result.zero_shot_languages)} zero-shot languages"
                f"{': ' + ', '.join(helped) if helped else ''}); ")
        if verdict == ONE_SEED:
            text += ONE_SEED
        elif verdict == NOT_RESOLVED:
            text += f"{NOT_RESOLVED} (95 % interval over {arm.seeds} seeds {arm.intervals[ZERO_SHOT].text()})"
        else:
            text += f"a {verdict} (95 % interval over {arm.seeds} seeds {arm.intervals[ZERO_SHOT].text()} excludes 0)"
        parts.append(text)
    return f"{result.target}: " + "; ".join(parts) + "."


def multimodal_table(result: MultimodalDeltas) -> Table:
    keys = result.languages + [ZERO_SHOT]
    rows = [[f"{NONE} (baseline)"] + [_num(result.baseline.get(k)) for k in keys] + ["–"]]
    classes = ["baseline"]
    for arm in result.arms:
        rows.append([arm.arm] + [_cell(arm.deltas.get(k), arm.intervals.get(k)) for k in keys] + [arm.verdict()])
        classes.append("")
    if result.chance:
        rows.append(["majority class"] + [_num(result.chance.get(k)) for k in result.languages]
                    + [_num(_zero_shot_mean(result.chance, result.zero_shot_languages)), "–"])
        classes.append("chance")
    return Table(
        f"multimodal_{result.target}",
        f"{result.target}: dev {result.metric} of {NONE}, and each intermediate's difference to it, per language",
        ["intermediate task"] + keys + ["verdict (zero-shot mean)"], rows,
        notes=[f"Row {NONE}: its English-dev-selected trial's score; other rows: the difference of their "
               f"English-dev-selected trial to it (points). {ZERO_SHOT}: over the languages other than English. "
               "With seeds, a cell is the seed-mean difference and its 95 % percentile-bootstrap interval over seeds "
               "(* where it excludes 0); without, the single trials' difference.",
               conclusion(result)],
        row_classes=classes,
    )


def multimodal_blocks(summary: StudySummary) -> list:
    """The report section's blocks (tables and a paragraph); [] for a study without a
    multimodal target or without a `none` baseline for one."""
    results = [r for t in multimodal_targets(summary) if (r := multimodal_deltas(summary, t)) is not None]
    if not results:
        return []
    intro = ("Does English text-only intermediate training help zero-shot cross-lingual multimodal tasks? Phase 2 "
             "trains the text encoder on the intermediate task; phase 3 fuses image regions into it (single-stream) "
             "and trains on English; every other language is zero-shot.")
    return [intro, *[multimodal_table(r) for r in results]]


def multimodal_json(summary: StudySummary) -> dict[str, Any]:
    out = {}
    for target in multimodal_targets(summary):
        result = multimodal_deltas(summary, target)
        if result is None:
            continue
        out[target] = {
            "languages": result.languages, "zero_shot_languages": result.zero_shot_languages,
            "baseline": result.baseline, "chance": result.chance, "conclusion": conclusion(result),
            "arms": {a.arm: {"scores": a.scores, "deltas": a.deltas, "seeds": a.seeds, "verdict": a.verdict(),
                             "intervals": {k: (None if i is None else {"delta": i.delta, "low": i.low, "high": i.high})
                                           for k, i in a.intervals.items()}}
                     for a in result.arms},
        }
    return out
