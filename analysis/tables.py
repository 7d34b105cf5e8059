"""The tables that answer the research questions of a study, from its MLflow records only.

`summarize(trials)` reads a study's trial records once (an iterator: pass
`xstilts.analysis.records.iter_trials(study)`, which streams MLflow's paginated search) and keeps only
what the tables and plots need: per (intermediate task, target task) cell the selection-metric
values of its completed trials, the cell's best trial under each selection rule, and one light
point per trial. The table functions then read that `StudySummary`:

- `english_dev_table`: the paper's main table on the selection metric: intermediate task (rows,
  `none` = no intermediate training, the baseline) x target task (columns); per cell the
  number of completed trials and the mean, median and best English dev score over them (over
  learning rates and seeds), and deltas to the `none` row.
- `zero_shot_table`: the same grid on zero-shot transfer: the all-language dev mean
  (`final/all_languages_mean`) of the cell's English-dev-selected trial, its delta to `none`,
  the mean over the cell's trials, and an XTREME-style score per intermediate task.
- `language_table` / `language_gain_table`: per target, the per-language scores of each cell's
  selected trial (with the majority-class baseline), and the gain over `none` per language.
- `selection_rules_table`: the best trial per target selected on English dev (honest) and,
  labelled as an oracle, on the all-language dev mean, and how often the two differ.
- `comparison_tables`: two or more studies side by side.

The XTREME-style score is `xstilts.tasks.xtreme_eval.xtreme_aggregate` (the one XTREME aggregation of
the project) applied to {target: per-language score of the English-dev-selected trial}: the mean
over the targets *present* of each target's mean over its languages. It is XTREME's
aggregation over the targets a study has, on each target's selection metric, not a published
XTREME score.
"""
from __future__ import annotations

import html
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from xstilts.analysis.records import TrialRecord
from xstilts.analysis.run_stats import RunStats
from xstilts.analysis.select import BestTracker, Selection
from xstilts.tasks import NONE, UnknownTaskError, get_task
from xstilts.analysis.uncertainty import SeedScores
from xstilts.tasks.record_schema import PARAM_RETRIEVAL_LAYER, PARAM_INTERMEDIATE_LR, PARAM_TARGET_LR, FINAL_ALL_LANGUAGES, FINAL_EN_DEV, FINAL_CHANCE_PREFIX, FINAL_ZERO_SHOT
from xstilts.tasks.xtreme_eval import XTREME_R_LANGUAGES, xtreme_aggregate, xtreme_r_score

HONEST, ORACLE = "en_dev", "oracle_all_languages"
# How phase 3 trained (the trial param `target_train`): zero-shot from English, or on the training
# sets of every target language (translate-train). A study may search both: then each
# intermediate task gives two rows ("arms"), the second labelled `<intermediate> [translate_train]`.
ENGLISH, TRANSLATE_TRAIN, PER_LANGUAGE = "english", "translate_train", "per_language"
XTREME_STYLE_NOTE = (
    "XTREME-style score: xstilts.tasks.xtreme_eval's XTREME aggregation over the targets present in the "
    "study (the mean over targets of each target's mean over its languages, on its selection "
    "metric, for each intermediate task's English-dev-selected trial); not a published XTREME score."
)


# ------------------------------------------------------------------------------------------------
# One pass over the records
# ------------------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One (intermediate task, target task) cell of a study."""

    intermediate: str
    target: str
    started: int = 0  # trials recorded (completed, stopped early, failed)
    en_dev: list[float] = field(default_factory=list)  # final English dev score of each completed trial
    all_languages: list[float] = field(default_factory=list)  # final all-language dev mean, same trials
    selected: TrialRecord | None = None  # best on English dev
    oracle: TrialRecord | None = None  # best on the all-language dev mean (an oracle)

    @property
    def n(self) -> int:
        return len(self.en_dev)

    def en_dev_stats(self) -> dict[str, float | None]:
        return _stats(self.en_dev)

    def selected_all_languages(self) -> float | None:
        return self.selected.metrics.get(FINAL_ALL_LANGUAGES) if self.selected else None

    def selected_zero_shot(self) -> float | None:
        return self.selected.metrics.get(FINAL_ZERO_SHOT) if self.selected else None


@dataclass(frozen=True)
class TrialPoint:
    """What the plots need of one trial (kept for every trial, so it stays small)."""

    run_id: str
    trial_id: str
    target: str
    intermediate: str
    status: str
    completed: bool
    start_time: int | None
    target_lr: float | None
    intermediate_lr: float | None
    en_dev: float | None  # final English dev score, or the last epoch's for a trial stopped early
    all_languages: float | None


@dataclass
class StudySummary:
    name: str
    cells: dict[tuple[str, str], Cell]
    targets: list[str]
    intermediates: list[str]  # `none` first
    metrics: dict[str, str]  # target -> selection metric name
    languages: dict[str, list[str]]  # target -> languages, the task's order
    chance: dict[str, dict[str, float]]  # target -> language -> majority-class score
    best: dict[str, dict[str, Selection]]  # rule -> target -> Selection
    points: list[TrialPoint]  # in start order
    status_counts: dict[str, dict[str, int]]  # target -> MLflow status -> trials
    run: RunStats = field(default_factory=RunStats)  # wall times, phase cache, throughput, retrieval layers
    # (target, arm) -> {configuration (hyperparameters): its completed seeds' scores} (`seeds` option)
    seed_scores: dict = field(default_factory=dict)

    def cell(self, intermediate: str, target: str) -> Cell | None:
        return self.cells.get((intermediate, target))

    @property
    def has_baseline(self) -> bool:
        return NONE in self.intermediates


def _float(value: Any) -> float | None:
    try:
        return None if value in (None, "", "None") else float(value)
    except (TypeError, ValueError):
        return None


def arm_label(trial: TrialRecord) -> str:
    """The row a trial belongs to: its intermediate task, marked when phase 3 was not zero-shot
    (so that translate-train trials are never compared, selected or averaged with zero-shot ones)."""
    intermediate = trial.intermediate_task or "(unknown)"
    target_train = trial.params.get("target_train")
    if target_train and target_train != ENGLISH:  # translate_train or per_language
        return f"{intermediate} [{target_train}]"
    return intermediate


def summarize(trials: Iterable[TrialRecord], name: str = "") -> StudySummary:
    """Read the study's trial records once and keep what the tables and plots need."""
    cells: dict[tuple[str, str], Cell] = {}
    metrics: dict[str, str] = {}
    seen_languages: dict[str, set[str]] = {}
    chance: dict[str, dict[str, float]] = {}
    status_counts: dict[str, dict[str, int]] = {}
    points: list[TrialPoint] = []
    per_target = BestTracker((HONEST, ORACLE))
    per_cell = BestTracker((HONEST, ORACLE))
    run = RunStats()
    seed_scores: dict = {}
    for trial in trials:
        target, intermediate = trial.target_task or "(unknown)", arm_label(trial)
        run.add(trial, intermediate)
        key = (intermediate, target)
        cell = cells.setdefault(key, Cell(intermediate, target))
        cell.started += 1
        counts = status_counts.setdefault(target, {})
        counts[trial.status] = counts.get(trial.status, 0) + 1
        if trial.selection_metric:
            metrics.setdefault(target, trial.selection_metric)
        points.append(TrialPoint(
            trial.run_id, trial.trial_id, target, intermediate, trial.status, trial.completed, trial.start_time,
            _float(trial.params.get(PARAM_TARGET_LR)), _float(trial.params.get(PARAM_INTERMEDIATE_LR)),
            trial.last_en_dev_score, trial.metrics.get(FINAL_ALL_LANGUAGES),
        ))
        configuration = tuple(trial.params.get(p) for p in (PARAM_INTERMEDIATE_LR, PARAM_TARGET_LR, PARAM_RETRIEVAL_LAYER))
        if not trial.completed:
            if trial.status == "FINISHED" and FINAL_EN_DEV not in trial.metrics:  # stopped early by the scheduler
                seed_scores.setdefault((target, intermediate), {}).setdefault(configuration, SeedScores()).stopped += 1
            continue
        cell.en_dev.append(trial.en_dev_score)
        if FINAL_ALL_LANGUAGES in trial.metrics:
            seeds = seed_scores.setdefault((target, intermediate), {}).setdefault(configuration, SeedScores())
            seeds.en_dev.append(trial.en_dev_score)
            seeds.all_languages.append(trial.metrics[FINAL_ALL_LANGUAGES])
            seeds.languages.append(trial.language_scores())
        if FINAL_ALL_LANGUAGES in trial.metrics:
            cell.all_languages.append(trial.metrics[FINAL_ALL_LANGUAGES])
        scores = trial.language_scores()
        seen_languages.setdefault(target, set()).update(scores)
        if target not in chance:
            found = {lang: trial.metrics.get(f"{FINAL_CHANCE_PREFIX}{lang}/{trial.selection_metric}") for lang in scores}
            if scores and all(v is not None for v in found.values()):
                chance[target] = found
        per_target.add(target, trial)
        per_cell.add(key, trial)
    for rule, found in per_cell.selections().items():
        for key, selection in found.items():
            setattr(cells[key], "selected" if rule == HONEST else "oracle", selection.best)
    targets = sorted({t for _, t in cells})
    others = sorted({i for i, _ in cells if i != NONE})
    intermediates = ([NONE] if any(i == NONE for i, _ in cells) else []) + others
    points.sort(key=lambda p: (p.start_time is None, p.start_time or 0))
    best = {rule: dict(sorted(found.items())) for rule, found in per_target.selections().items()}
    return StudySummary(name, cells, targets, intermediates, metrics,
                        {t: _language_order(t, seen_languages.get(t, set())) for t in targets},
                        chance, best, points, status_counts, run, seed_scores)


def _language_order(target: str, seen: set[str]) -> list[str]:
    """The task's own language order when it is a known task (train language first), else sorted."""
    try:
        task = get_task(target)
        order = [task.train_language] + [lang for lang in task.languages if lang != task.train_language]
    except UnknownTaskError:
        order = ["en"]
    return [lang for lang in order if lang in seen] + sorted(seen - set(order))


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "best": None}
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "best": max(values)}


def _delta(value: float | None, baseline: float | None) -> float | None:
    return None if value is None or baseline is None else value - baseline


# ------------------------------------------------------------------------------------------------
# Numbers (JSON-able), used by the tables, the plots and `xstilts analyze --table --json`
# ------------------------------------------------------------------------------------------------

def _xtreme_delta(scores: dict, baseline: dict) -> tuple[list[str], float | None]:
    """(the targets both have, the XTREME-style score over them minus the baseline's; None without any)."""
    common = [t for t in scores if t in baseline]
    if not common:
        return common, None
    return common, (xtreme_aggregate({t: scores[t] for t in common})["mean_over_tasks"]
                    - xtreme_aggregate({t: baseline[t] for t in common})["mean_over_tasks"])


def xtreme_style_scores(summary: StudySummary) -> dict[str, dict[str, Any]]:
    """Per intermediate task: the XTREME-style score over the targets it has a selected trial for,
    and its delta to `none` computed over the targets both have."""
    per_language = {
        i: {t: c.selected.language_scores() for t in summary.targets
            if (c := summary.cell(i, t)) is not None and c.selected is not None}
        for i in summary.intermediates
    }
    baseline = per_language.get(NONE, {})
    result = {}
    for intermediate, scores in per_language.items():
        aggregate = xtreme_aggregate(scores)
        common, delta = _xtreme_delta(scores, baseline) if intermediate != NONE else ([t for t in scores if t in baseline], None)
        result[intermediate] = {
            "score": aggregate["mean_over_tasks"], "targets": sorted(scores), "of_targets": len(summary.targets),
            "per_target": aggregate["tasks"], "delta_vs_none": delta, "delta_over_targets": common,
            "xtreme_r": xtreme_r_score(scores),
            **{k: v for k, v in aggregate.items() if k not in ("tasks", "mean_over_tasks")},
        }
    return result


def best_per_target_scores(summary: StudySummary) -> dict[str, dict[str, Any]]:
    """The paper's composite (its "+5.4"): one model per target, the best over every intermediate
    task, then the XTREME-style score over the targets and its difference to the baseline's over
    the same targets. Per selection rule: English dev (honest) and all-language dev (oracle)."""
    baseline = {t: c.selected.language_scores() for t in summary.targets
                if (c := summary.cell(NONE, t)) is not None and c.selected is not None}
    result = {}
    for rule in (HONEST, ORACLE):
        chosen = summary.best.get(rule, {})
        scores = {t: s.best.language_scores() for t, s in chosen.items() if s.best.language_scores()}
        if not scores:
            continue
        common, delta = _xtreme_delta(scores, baseline)
        result[rule] = {"score": xtreme_aggregate(scores)["mean_over_tasks"], "delta_vs_none": delta,
                        "delta_over_targets": common, "arms": {t: arm_label(chosen[t].best) for t in scores},
                        "xtreme_r": _xtreme_r_delta(scores, baseline)}
    return result


def _xtreme_r_delta(scores: dict, baseline: dict) -> dict[str, Any] | None:
    """XTREME-R's average of `scores` (xtreme_eval.xtreme_r_score) and its difference to the
    baseline's over the XTREME-R tasks both have; None when no target is an XTREME-R task."""
    found = xtreme_r_score(scores)
    if found is None:
        return None
    common = {t: baseline[t] for t in found["tasks"] if t in baseline}
    base = xtreme_r_score(common) if common else None
    mine = xtreme_r_score({t: scores[t] for t in common}) if common else None
    return {**found, "delta_vs_none": None if base is None else mine["score"] - base["score"],
            "delta_over_tasks": sorted(common)}


def best_per_target_table(summary: StudySummary) -> Table | None:
    composite = best_per_target_scores(summary)
    if not composite:
        return None
    with_r = any(x["xtreme_r"] is not None for x in composite.values())
    rows = []
    for rule, x in composite.items():
        row = ([{HONEST: "English dev", ORACLE: "oracle (all-language dev)"}[rule]]
               + [x["arms"].get(t, "–") for t in summary.targets] + [_num(x["score"]), _signed(x["delta_vs_none"])])
        if with_r:
            r = x["xtreme_r"]
            row += ["–", "–"] if r is None else [
                _num(r["score"]) + ("" if r["complete"] else f" ({len(r['tasks'])}/{len(XTREME_R_LANGUAGES)} tasks)"),
                _signed(r["delta_vs_none"])]
        rows.append(row)
    notes = ["Each target takes its best trial over every intermediate task (the paper's best-per-target "
             "composite); Δ is to the `none` rows' XTREME-style score over the same targets.", XTREME_STYLE_NOTE]
    if with_r:
        notes.append("XTREME-R: its ten tasks' mean, each task the mean over its XTREME-R languages "
                     "(xstilts.tasks.xtreme_eval.xtreme_r_score; QA on F1). (k/10 tasks): only k of XTREME-R's tasks are "
                     "targets here, so the number is over those (and over the languages scored), not the published "
                     "XTREME-R score; Δ over the XTREME-R tasks the `none` rows have too.")
    return Table("best_per_target", "Best model per target: XTREME-style score and its difference to the baseline",
                 ["selected by"] + list(summary.targets) + ["XTREME-style", "Δ XTREME-style"]
                 + (["XTREME-R", "Δ XTREME-R"] if with_r else []), rows, notes=notes)


def selection_disagreement(summary: StudySummary) -> dict[str, Any]:
    """How often the English-dev pick and the oracle (all-language dev mean) pick differ: per target
    and per (intermediate, target) cell, and how much all-language score the honest rule gives up."""
    honest, oracle = summary.best.get(HONEST, {}), summary.best.get(ORACLE, {})
    targets = [t for t in summary.targets if t in honest and t in oracle]
    differ = [t for t in targets if honest[t].best.run_id != oracle[t].best.run_id]
    cells = [c for c in summary.cells.values() if c.selected is not None and c.oracle is not None]
    cells_differ = [c for c in cells if c.selected.run_id != c.oracle.run_id]
    gaps = {t: oracle[t].best.metrics.get(FINAL_ALL_LANGUAGES, float("nan")) - honest[t].best.metrics.get(FINAL_ALL_LANGUAGES, float("nan"))
            for t in targets}
    return {
        "targets": len(targets), "targets_differ": len(differ), "differing_targets": differ,
        "cells": len(cells), "cells_differ": len(cells_differ),
        "differing_cells": [[c.intermediate, c.target] for c in cells_differ],
        "oracle_gap_all_languages": gaps,
    }


def _trial_json(trial: TrialRecord | None) -> dict | None:
    if trial is None:
        return None
    return {
        "run_id": trial.run_id, "trial_id": trial.trial_id, "intermediate_task": trial.intermediate_task,
        "arm": arm_label(trial), "target_train": trial.params.get("target_train", ENGLISH),
        "intermediate_lr": _float(trial.params.get(PARAM_INTERMEDIATE_LR)), "target_lr": _float(trial.params.get(PARAM_TARGET_LR)),
        "en_dev": trial.en_dev_score, "all_languages": trial.metrics.get(FINAL_ALL_LANGUAGES),
        "zero_shot": trial.metrics.get(FINAL_ZERO_SHOT), "per_language": trial.language_scores(),
        "checkpoint": trial.checkpoint,
    }


def summary_json(summary: StudySummary) -> dict[str, Any]:
    """Everything the tables show, as numbers."""
    cells = {}
    for (intermediate, target), cell in sorted(summary.cells.items()):
        base = summary.cell(NONE, target)
        stats = cell.en_dev_stats()
        base_stats = base.en_dev_stats() if base else {}
        all_stats = _stats(cell.all_languages)
        cells.setdefault(intermediate, {})[target] = {
            "trials": cell.started, "completed": cell.n, "en_dev": stats,
            "en_dev_delta_vs_none": {k: _delta(v, base_stats.get(k)) for k, v in stats.items()} if base else None,
            "all_languages_selected": cell.selected_all_languages(),
            "all_languages_selected_delta_vs_none": _delta(cell.selected_all_languages(), base.selected_all_languages()) if base else None,
            "all_languages_over_trials": all_stats,
            "zero_shot_selected": cell.selected_zero_shot(),
            "selected": _trial_json(cell.selected), "oracle": _trial_json(cell.oracle),
        }
    return {
        "study": summary.name, "targets": summary.targets, "intermediates": summary.intermediates,
        "selection_metric": summary.metrics, "languages": summary.languages, "chance": summary.chance,
        "trials_by_status": summary.status_counts, "cells": cells,
        "xtreme_style": xtreme_style_scores(summary), "xtreme_style_note": XTREME_STYLE_NOTE,
        "best_per_target": best_per_target_scores(summary),
        "best": {rule: {t: {"completed_trials": s.candidates, **_trial_json(s.best)} for t, s in found.items()}
                 for rule, found in summary.best.items()},
        "selection_disagreement": selection_disagreement(summary),
    }


# ------------------------------------------------------------------------------------------------
# Tables: one shape, three renderings (Markdown, HTML, terminal text)
# ------------------------------------------------------------------------------------------------

@dataclass
class Table:
    key: str  # a stable id (HTML anchor, JSON key)
    title: str
    columns: list[str]  # the first is the row-label column
    rows: list[list[str]]
    groups: list[tuple[str, int]] = field(default_factory=list)  # header groups over columns[1:]
    notes: list[str] = field(default_factory=list)
    row_classes: list[str] = field(default_factory=list)  # per row, e.g. "baseline" (HTML only)

    def _flat_columns(self) -> list[str]:
        if not self.groups:
            return list(self.columns)
        names = [self.columns[0]]
        position = 1
        for group, span in self.groups:
            for column in self.columns[position:position + span]:
                names.append(f"{group} {column}".strip())
            position += span
        return names + self.columns[position:]

    def markdown(self) -> str:
        def esc(text: str) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        columns = self._flat_columns()
        lines = [f"### {self.title}", "", "| " + " | ".join(esc(c) for c in columns) + " |",
                 "|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        lines += [""] + [f"*{esc(note)}*  " for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def html(self) -> str:
        e = html.escape
        head = []
        if self.groups:
            cells = [f'<th rowspan="2" class="label">{e(self.columns[0])}</th>']
            cells += [f'<th colspan="{span}" class="group">{e(group)}</th>' for group, span in self.groups]
            covered = 1 + sum(span for _, span in self.groups)
            cells += [f'<th rowspan="2">{e(c)}</th>' for c in self.columns[covered:]]
            head.append("<tr>" + "".join(cells) + "</tr>")
            head.append("<tr>" + "".join(f"<th>{e(c)}</th>" for c in self.columns[1:covered]) + "</tr>")
        else:
            head.append("<tr>" + "".join(f'<th{" class=label" if n == 0 else ""}>{e(c)}</th>'
                                          for n, c in enumerate(self.columns)) + "</tr>")
        body = []
        for n, row in enumerate(self.rows):
            css = self.row_classes[n] if n < len(self.row_classes) else ""
            cells = "".join((f"<th>{e(str(v))}</th>" if i == 0 else f"<td>{e(str(v))}</td>") for i, v in enumerate(row))
            body.append(f'<tr{f" class={css!r}" if css else ""}>{cells}</tr>')
        notes = "".join(f"<p class=\"note\">{e(note)}</p>" for note in self.notes)
        return (f'<section class="table" id="{e(self.key)}"><h3>{e(self.title)}</h3>'
                f'<div class="scroll"><table><thead>{"".join(head)}</thead><tbody>{"".join(body)}</tbody></table></div>'
                f"{notes}</section>")

    def text(self) -> str:
        """Aligned plain text for a terminal; groups as a header line above their columns."""
        columns = list(self.columns)
        widths = [max(len(str(x)) for x in [c] + [r[i] for r in self.rows if i < len(r)]) for i, c in enumerate(columns)]
        spans, position = [], 1
        for group, span in self.groups:
            spans.append((group, position, position + span))
            inner = sum(widths[position:position + span]) + 2 * (span - 1)
            if len(group) > inner:  # widen the group's last column to fit its name
                widths[position + span - 1] += len(group) - inner
            position += span

        def line(row: list[str]) -> str:
            return "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))).rstrip()

        lines = [self.title]
        if spans:
            head, cursor = " " * widths[0], 1
            for group, start, end in spans:
                inner = sum(widths[start:end]) + 2 * (end - start - 1)
                head += "  " + group.center(inner, "-")
                cursor = end
            lines.append(head.rstrip())
        lines += [line(columns), "  ".join("-" * w for w in widths)] + [line(r) for r in self.rows]
        return "\n".join(lines + [f"  {note}" for note in self.notes])


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _lr(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _label(intermediate: str) -> str:
    return f"{NONE} (baseline)" if intermediate == NONE else intermediate


def _row_classes(summary: StudySummary) -> list[str]:
    return ["baseline" if i == NONE else "" for i in summary.intermediates]


def _baseline_note(summary: StudySummary) -> str:
    if summary.has_baseline:
        return f"Δ: difference to the `{NONE}` row (no intermediate training: the baseline), same target."
    return f"No `{NONE}` (baseline) trials in this study: no deltas."


def english_dev_table(summary: StudySummary) -> Table:
    """The main table on the selection metric: per cell, statistics over its completed trials."""
    sub = ["n", "mean", "median", "best", "Δ mean", "Δ best"]
    rows = []
    for intermediate in summary.intermediates:
        row = [_label(intermediate)]
        for target in summary.targets:
            cell, base = summary.cell(intermediate, target), summary.cell(NONE, target)
            if cell is None:
                row += ["–"] * len(sub)
                continue
            stats = cell.en_dev_stats()
            base_stats = base.en_dev_stats() if base and intermediate != NONE else {}
            row += [f"{cell.n}/{cell.started}", _num(stats["mean"]), _num(stats["median"]), _num(stats["best"]),
                    _signed(_delta(stats["mean"], base_stats.get("mean"))), _signed(_delta(stats["best"], base_stats.get("best")))]
        rows.append(row)
    return Table(
        "english_dev", "Main table: English dev selection metric over the completed trials",
        ["intermediate task"] + sub * len(summary.targets), rows,
        groups=[(f"{t} ({summary.metrics.get(t, '?')})", len(sub)) for t in summary.targets],
        notes=["Per cell (intermediate task x target task): n = completed trials / trials started (the others "
               "were stopped early by the scheduler or failed); mean, median and best of the final English dev "
               "score (the selection metric) over those trials, i.e. over the learning rates and seeds tried.",
               _baseline_note(summary)],
        row_classes=_row_classes(summary),
    )


def zero_shot_table(summary: StudySummary) -> Table:
    """The paper-style table on zero-shot transfer, plus the XTREME-style score per intermediate."""
    sub = ["selected", "Δ", "mean", "zero-shot"]
    xtreme = xtreme_style_scores(summary)
    rows = []
    for intermediate in summary.intermediates:
        row = [_label(intermediate)]
        for target in summary.targets:
            cell, base = summary.cell(intermediate, target), summary.cell(NONE, target)
            if cell is None:
                row += ["–"] * len(sub)
                continue
            delta = _delta(cell.selected_all_languages(), base.selected_all_languages()) if base and intermediate != NONE else None
            row += [_num(cell.selected_all_languages()), _signed(delta),
                    _num(_stats(cell.all_languages)["mean"]), _num(cell.selected_zero_shot())]
        x = xtreme[intermediate]
        row += [_num(x["score"]), _signed(x["delta_vs_none"]), f"{len(x['targets'])}/{x['of_targets']}"]
        rows.append(row)
    return Table(
        "zero_shot", "Zero-shot cross-lingual transfer: all-language dev mean, and XTREME-style score",
        ["intermediate task"] + sub * len(summary.targets) + ["XTREME-style", "Δ XTREME-style", "targets"], rows,
        groups=[(f"{t} ({summary.metrics.get(t, '?')})", len(sub)) for t in summary.targets],
        notes=["selected = mean over all the target's languages (English included) of the dev scores of the cell's "
               "trial selected on English dev (the honest zero-shot choice); mean = the same all-language mean "
               "averaged over the cell's completed trials; zero-shot = the selected trial's mean over the "
               "non-English languages.",
               _baseline_note(summary) + " Δ XTREME-style is computed over the targets both rows have.",
               XTREME_STYLE_NOTE],
        row_classes=_row_classes(summary),
    )


def language_table(summary: StudySummary, target: str) -> Table:
    languages = summary.languages.get(target, [])
    rows, classes = [], []
    for intermediate in summary.intermediates:
        cell = summary.cell(intermediate, target)
        if cell is None or cell.selected is None:
            continue
        scores = cell.selected.language_scores()
        rows.append([_label(intermediate)] + [_num(scores.get(lang)) for lang in languages] + [_num(cell.selected_all_languages())])
        classes.append("baseline" if intermediate == NONE else "")
    if target in summary.chance:
        chance = summary.chance[target]
        rows.append(["majority class"] + [_num(chance.get(lang)) for lang in languages]
                    + [_num(statistics.fmean(chance.values()) if chance else None)])
        classes.append("chance")
    return Table(
        f"languages_{target}", f"{target}: dev {summary.metrics.get(target, '?')} per language (English-dev-selected trial per intermediate task)",
        ["intermediate task"] + languages + ["all languages"], rows,
        notes=["Each row is the trial of that intermediate task selected on English dev; majority class = "
               "predicting the most frequent training label (a floor)."],
        row_classes=classes,
    )


def language_gain_table(summary: StudySummary, target: str) -> Table | None:
    """Gain over the `none` baseline per language, or None without a baseline for this target."""
    base = summary.cell(NONE, target)
    if base is None or base.selected is None:
        return None
    languages = summary.languages.get(target, [])
    base_scores = base.selected.language_scores()
    rows = []
    for intermediate in summary.intermediates:
        cell = summary.cell(intermediate, target)
        if intermediate == NONE or cell is None or cell.selected is None:
            continue
        scores = cell.selected.language_scores()
        rows.append([intermediate] + [_signed(_delta(scores.get(lang), base_scores.get(lang))) for lang in languages]
                    + [_signed(_delta(cell.selected_all_languages(), base.selected_all_languages()))])
    return Table(
        f"gains_{target}", f"{target}: gain over the `{NONE}` baseline per language",
        ["intermediate task"] + languages + ["all languages"], rows,
        notes=[f"Dev {summary.metrics.get(target, '?')} of each intermediate task's English-dev-selected trial minus "
               f"that of the `{NONE}` baseline's, per language."],
    )


def selection_rules_table(summary: StudySummary) -> Table:
    rows, classes = [], []
    labels = {HONEST: "English dev", ORACLE: "ORACLE: all-language dev"}
    for target in summary.targets:
        picks = {rule: summary.best.get(rule, {}).get(target) for rule in (HONEST, ORACLE)}
        same = picks[HONEST] is not None and picks[ORACLE] is not None and picks[HONEST].best.run_id == picks[ORACLE].best.run_id
        for rule, selection in picks.items():
            if selection is None:
                continue
            t = selection.best
            intermediate_lr = _lr(_float(t.params.get(PARAM_INTERMEDIATE_LR))) if t.intermediate_task != NONE else "–"
            rows.append([target, labels[rule], t.trial_id, arm_label(t), intermediate_lr,
                         _lr(_float(t.params.get(PARAM_TARGET_LR))), _num(t.en_dev_score),
                         _num(t.metrics.get(FINAL_ALL_LANGUAGES)), _num(t.metrics.get(FINAL_ZERO_SHOT)),
                         str(selection.candidates), "same trial" if same else "differ"])
            classes.append("oracle" if rule == ORACLE else "")
    d = selection_disagreement(summary)
    gaps = d["oracle_gap_all_languages"]
    gap_text = ", ".join(f"{t} {_signed(g)}" for t, g in gaps.items())
    return Table(
        "selection_rules", "Best trial per target: selected on English dev vs. on the all-language dev mean (oracle)",
        ["target", "selected on", "trial", "intermediate", "intermediate lr", "target lr", "English dev",
         "all languages", "zero-shot", "completed trials", "picks"], rows,
        notes=[f"English dev is the honest zero-shot selection (no target-language data); the ORACLE row selects on "
               f"the dev sets of every language, which a zero-shot setting does not have: an upper bound on "
               f"model selection, not a result.",
               f"The two rules pick different trials for {d['targets_differ']} of {d['targets']} target(s), and for "
               f"{d['cells_differ']} of {d['cells']} (intermediate, target) cell(s)."
               + (f" All-language dev mean the oracle gains over the English-dev pick: {gap_text}." if gaps else "")],
        row_classes=classes,
    )


def study_tables(summary: StudySummary) -> list[Table]:
    """Every table of one study, in report order."""
    tables = [english_dev_table(summary), zero_shot_table(summary)]
    for target in summary.targets:
        tables.append(language_table(summary, target))
        gains = language_gain_table(summary, target)
        if gains is not None:
            tables.append(gains)
    tables.append(selection_rules_table(summary))
    return tables


def comparison_tables(summaries: Sequence[StudySummary]) -> list[Table]:
    """Two or more studies side by side: XTREME-style score per intermediate task, and the
    English-dev-selected best trial per target."""
    names = [s.name for s in summaries]
    intermediates = ([NONE] if any(s.has_baseline for s in summaries) else []) + sorted(
        {i for s in summaries for i in s.intermediates if i != NONE})
    scores = [xtreme_style_scores(s) for s in summaries]
    rows = []
    for intermediate in intermediates:
        row = [_label(intermediate)]
        for x in scores:
            entry = x.get(intermediate)
            row += ([_num(entry["score"]), _signed(entry["delta_vs_none"]), f"{len(entry['targets'])}/{entry['of_targets']}"]
                    if entry else ["–", "–", "–"])
        rows.append(row)
    first = Table(
        "compare_xtreme", "Studies side by side: XTREME-style score per intermediate task",
        ["intermediate task"] + ["XTREME-style", "Δ vs none", "targets"] * len(summaries), rows,
        groups=[(name, 3) for name in names],
        notes=[XTREME_STYLE_NOTE, "Scores of different studies are comparable only over the same targets "
               "(see the targets column) and the same data."],
        row_classes=["baseline" if i == NONE else "" for i in intermediates],
    )
    targets = sorted({t for s in summaries for t in s.targets})
    rows = []
    for target in targets:
        row = [target]
        for s in summaries:
            selection = s.best.get(HONEST, {}).get(target)
            if selection is None:
                row += ["–"] * 4
                continue
            t = selection.best
            row += [arm_label(t), _num(t.en_dev_score), _num(t.metrics.get(FINAL_ALL_LANGUAGES)), str(selection.candidates)]
        rows.append(row)
    second = Table(
        "compare_best", "Studies side by side: best trial per target (selected on English dev)",
        ["target"] + ["intermediate", "English dev", "all languages", "completed trials"] * len(summaries), rows,
        groups=[(name, 4) for name in names],
    )
    return [first, second]
