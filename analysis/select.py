"""Which trial won, per target task."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from xstilts.analysis.records import TrialRecord
from xstilts.tasks.record_schema import FINAL_ALL_LANGUAGES, FINAL_CHANCE_PREFIX, FINAL_EN_DEV

RULES = {
    "en_dev": "English dev metric (the honest zero-shot choice)",
    "oracle_all_languages": "mean dev metric over all languages (an oracle: uses target-language dev data)",
}


@dataclass(frozen=True)
class Selection:
    target_task: str
    rule: str
    best: TrialRecord
    candidates: int  # completed trials of this target

    def score(self) -> float:
        return rule_score(self.best, self.rule)


def rule_score(trial: TrialRecord, rule: str) -> float:
    if rule == "en_dev":
        return trial.metrics[FINAL_EN_DEV]
    if rule == "oracle_all_languages":
        return trial.metrics[FINAL_ALL_LANGUAGES]
    raise ValueError(f"unknown selection rule {rule!r}; use one of {', '.join(RULES)}")


def best_per_target(trials: Iterable[TrialRecord], rule: str = "en_dev") -> dict[str, Selection]:
    """The completed trial with the highest score under `rule`, per target task (ties: first run)."""
    return best_per_target_by_rule(trials, (rule,))[rule]


def best_per_target_by_rule(trials: Iterable[TrialRecord], rules: Iterable[str] = tuple(RULES)) -> dict[str, dict[str, Selection]]:
    """{rule: best_per_target(trials, rule)} for several rules, reading `trials` once."""
    tracker = BestTracker(rules)
    for trial in trials:
        tracker.add(trial.target_task, trial)
    return {rule: dict(sorted(found.items())) for rule, found in tracker.selections().items()}


class BestTracker:
    """The best completed trial per key (a target task, or an (intermediate, target) cell) under
    several selection rules at once, fed one trial at a time (single pass; ties: first trial)."""

    def __init__(self, rules: Iterable[str] = tuple(RULES)):
        self.rules = tuple(rules)
        for rule in self.rules:
            if rule not in RULES:
                raise ValueError(f"unknown selection rule {rule!r}; use one of {', '.join(RULES)}")
        self._best: dict[str, dict[object, TrialRecord]] = {rule: {} for rule in self.rules}
        self._count: dict[object, int] = {}

    def add(self, key, trial: TrialRecord) -> None:
        if not trial.completed:
            return
        self._count[key] = self._count.get(key, 0) + 1
        for rule in self.rules:
            current = self._best[rule].get(key)
            if current is None or rule_score(trial, rule) > rule_score(current, rule):
                self._best[rule][key] = trial

    def selections(self) -> dict[str, dict[object, Selection]]:
        return {rule: {key: Selection(trial.target_task, rule, trial, self._count[key]) for key, trial in found.items()}
                for rule, found in self._best.items()}


def selection_table(selections: dict[str, Selection]) -> str:
    """A terminal table: one row per target, the winning trial and its per-language scores."""
    lines = []
    for target, sel in selections.items():
        trial = sel.best
        languages = trial.language_scores()
        lines.append(
            f"{target}: best of {sel.candidates} completed trials by {sel.rule} -> trial {trial.trial_id} "
            f"(intermediate={trial.intermediate_task}, intermediate_lr={trial.params.get('intermediate_lr')}, "
            f"target_lr={float(trial.params.get('target_lr', 'nan')):.3g})"
        )
        header = "  " + "".join(f"{lang:>9}" for lang in languages)
        lines.append(f"  {trial.selection_metric} per language (dev):")
        lines.append(header)
        lines.append("  " + "".join(f"{score:9.2f}" for score in languages.values()))
        chance = {lang: trial.metrics.get(f"{FINAL_CHANCE_PREFIX}{lang}/{trial.selection_metric}") for lang in languages}
        if all(v is not None for v in chance.values()):
            lines.append("  " + "".join(f"{v:9.2f}" for v in chance.values()) + "   <- majority-class baseline")
        lines.append(f"  checkpoint: {trial.checkpoint}")
    return "\n".join(lines)


def selection_json(selections: dict[str, Selection]) -> dict:
    return {
        target: {
            "rule": sel.rule, "score": sel.score(), "completed_trials": sel.candidates,
            "trial_id": sel.best.trial_id, "run_id": sel.best.run_id,
            "intermediate_task": sel.best.intermediate_task, "params": sel.best.params,
            "selection_metric": sel.best.selection_metric, "en_dev_score": sel.best.en_dev_score,
            "per_language": sel.best.language_scores(), "checkpoint": sel.best.checkpoint,
        }
        for target, sel in selections.items()
    }
