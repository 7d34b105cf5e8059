"""How a study ran, from its MLflow records: wall time, trial times, the phase-2 cache, and the
training throughput of each phase; and, for retrieval targets, which encoder layer won.

`RunStats.add(trial)` is fed by `xstilts.analysis.tables.summarize` in its one pass over the trials.

Where the numbers come from (per trial run, logged by `trainables`):
- `phase_cache_hit` (1: the intermediate encoder came from the phase cache, 0: this trial
  trained it). A hit also carries a copy of the phase-2 metrics of the trial that trained it, so
  phase-2 throughput is read from misses only: each phase-2 training counts once.
- `[intermediate/]train_tokens_per_s`: real (non-padding) tokens per second of training, summed
  over the Ray Train workers, of the phase's last epoch; `[intermediate/]train_real_token_fraction`:
  real tokens / all tokens of that epoch's batches (padding is the rest).
- The trial's wall time: its MLflow run's end minus start (Ray start-up of the trial included).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xstilts.tasks import UnknownTaskError, get_task
from xstilts.tasks.kinds import kind_of
from xstilts.tasks.record_schema import METRIC_PHASE_CACHE_HIT, PARAM_RETRIEVAL_LAYER, STUDY_SESSIONS, STUDY_WALL_SECONDS, FINAL_ALL_LANGUAGES

if TYPE_CHECKING:
    from xstilts.analysis.records import StudyRecord, TrialRecord
    from xstilts.analysis.tables import StudySummary, Table

# The parent run's metrics (xstilts.study.study_run.finish_study_run): the study's wall time, summed over its
# driver sessions (`xstilts run`, then each `xstilts resume`), and how many sessions there were.
PHASES = (("phase 2 (intermediate)", "intermediate/"), ("phase 3 (target)", ""))


@dataclass
class PhaseThroughput:
    tokens_per_s: list[float] = field(default_factory=list)
    real_token_fraction: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)  # of the last epoch


@dataclass
class RunStats:
    trials: int = 0
    finished: int = 0
    trial_seconds: list[float] = field(default_factory=list)  # finished trials
    first_start_ms: int | None = None
    last_end_ms: int | None = None
    cache_hits: int = 0
    cache_misses: int = 0
    phases: dict[str, PhaseThroughput] = field(default_factory=lambda: {name: PhaseThroughput() for name, _ in PHASES})
    # retrieval targets: (target, intermediate, layer) -> all-language means of finished trials
    retrieval: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def add(self, trial: "TrialRecord", intermediate: str) -> None:
        self.trials += 1
        if trial.start_time is not None:
            self.first_start_ms = min(trial.start_time, self.first_start_ms or trial.start_time)
        if trial.end_time is not None:
            self.last_end_ms = max(trial.end_time, self.last_end_ms or trial.end_time)
        metrics = trial.metrics
        hit = metrics.get(METRIC_PHASE_CACHE_HIT)
        if hit is not None:
            if hit >= 0.5:
                self.cache_hits += 1
            else:
                self.cache_misses += 1
        for name, prefix in PHASES:
            if prefix and hit is not None and hit >= 0.5:
                continue  # a copy of another trial's phase-2 numbers
            rate = metrics.get(f"{prefix}train_tokens_per_s")
            if rate is None:
                continue
            phase = self.phases[name]
            phase.tokens_per_s.append(rate)
            if f"{prefix}train_real_token_fraction" in metrics:
                phase.real_token_fraction.append(metrics[f"{prefix}train_real_token_fraction"])
            if f"{prefix}train_seconds" in metrics:
                phase.train_seconds.append(metrics[f"{prefix}train_seconds"])
        if trial.status != "FINISHED":
            return
        self.finished += 1
        if trial.start_time is not None and trial.end_time is not None:
            self.trial_seconds.append((trial.end_time - trial.start_time) / 1000)
        layer = trial.params.get(PARAM_RETRIEVAL_LAYER)
        if layer is not None and FINAL_ALL_LANGUAGES in metrics and _is_retrieval(trial.target_task):
            self.retrieval.setdefault((trial.target_task, intermediate, layer), []).append(metrics[FINAL_ALL_LANGUAGES])

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else None

    @property
    def span_seconds(self) -> float | None:
        if self.first_start_ms is None or self.last_end_ms is None:
            return None
        return (self.last_end_ms - self.first_start_ms) / 1000


def _is_retrieval(target: str) -> bool:
    try:
        return not kind_of(get_task(target)).trainable
    except UnknownTaskError:
        return False


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _spread(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    median = f"{statistics.median(values):,.{digits}f}"
    if len(values) == 1:
        return median
    return f"{median} ({min(values):,.{digits}f}–{max(values):,.{digits}f}, n={len(values)})"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def run_table(stats: RunStats, study: "StudyRecord | None" = None) -> "Table":
    from xstilts.analysis.tables import Table

    wall = study.metrics.get(STUDY_WALL_SECONDS) if study is not None else None
    sessions = _sessions(study)
    rate = stats.cache_hit_rate
    rows = [
        ["study wall time", _duration(wall) + (f" ({sessions} sessions)" if sessions and sessions > 1 else ""),
         "the driver's `xstilts run`, Ray start-up to the last trial, plus each `xstilts resume` (the sum of the "
         f"driver sessions; parent run metric `{STUDY_WALL_SECONDS}`; while the study runs, up to its last report)"],
        ["trials: first start to last end", _duration(stats.span_seconds), "MLflow run times of the trials"],
        ["trials finished / recorded", f"{stats.finished} / {stats.trials}", "MLflow run status FINISHED"],
        ["trial wall time, median (min–max)", _spread(stats.trial_seconds, 0) + " s" if stats.trial_seconds else "–",
         "finished trials, MLflow run end - start (phase 2 when trained, phase 3, evaluation)"],
        ["phase-2 cache hit rate", "–" if rate is None else f"{100 * rate:.0f}% ({stats.cache_hits} hits, "
         f"{stats.cache_misses} trainings)", "trials with an intermediate task (incl. retrieval); a miss trains and stores it"],
    ]
    for name, _ in PHASES:
        phase = stats.phases[name]
        rows.append([f"{name}: training tokens/s", _spread(phase.tokens_per_s, 0),
                     "real tokens per second of the last epoch, all workers; median (min–max) over trainings"])
        rows.append([f"{name}: real-token fraction", _spread(phase.real_token_fraction, 3),
                     "real / (real + padding) tokens of the last epoch's batches"])
    return Table("run", "How the study ran", ["quantity", "value", "measured as"], rows)


def retrieval_layer_table(summary: "StudySummary", stats: RunStats) -> "Table | None":
    """Retrieval targets: the score of each (intermediate, layer), and the layer of the selected trial."""
    from xstilts.analysis.tables import NONE, Table, _num, _signed

    if not stats.retrieval:
        return None
    layers = sorted({layer for _, _, layer in stats.retrieval}, key=lambda v: (len(v), v))
    rows = []
    for target in summary.targets:
        if not any(t == target for t, _, _ in stats.retrieval):
            continue
        base = {layer: _median(stats.retrieval.get((target, NONE, layer), [])) for layer in layers}
        for intermediate in summary.intermediates:
            scores = {layer: stats.retrieval.get((target, intermediate, layer), []) for layer in layers}
            if not any(scores.values()):
                continue
            cells = []
            for layer in layers:
                value = _median(scores[layer])
                delta = "" if intermediate == NONE or value is None or base[layer] is None else f" ({_signed(value - base[layer])})"
                cells.append(_num(value) + delta)
            cell = summary.cell(intermediate, target)
            selected = cell.selected if cell is not None else None
            rows.append([target, intermediate, *cells,
                         selected.params.get(PARAM_RETRIEVAL_LAYER, "–") if selected is not None else "–",
                         _num(selected.metrics.get(FINAL_ALL_LANGUAGES)) if selected is not None else "–"])
    metric = ", ".join(f"{t}: {summary.metrics.get(t, '?')}" for t in summary.targets if any(x == t for x, _, _ in stats.retrieval))
    return Table("retrieval_layers", "Retrieval: mean over languages per encoder layer pooled",
                 ["target", "intermediate", *[f"layer {layer}" for layer in layers], "selected layer", "selected score"], rows,
                 notes=[f"Median over finished trials of the all-language mean ({metric}); in brackets the difference "
                        "to `none` at the same layer. Layers are numbered as HF hidden_states (0 = embeddings). "
                        "Retrieval has no English dev: the selected trial is the best all-language mean."])


def _sessions(study: "StudyRecord | None") -> int | None:
    """How many driver sessions the study's wall time sums (None: recorded before sessions were)."""
    value = study.metrics.get(STUDY_SESSIONS) if study is not None else None
    return int(value) if value is not None else None


def run_json(stats: RunStats, study: "StudyRecord | None" = None) -> dict:
    """run_table's numbers (summary.json)."""
    return {
        "study_wall_seconds": study.metrics.get(STUDY_WALL_SECONDS) if study is not None else None,
        "study_sessions": _sessions(study),
        "trials_span_seconds": stats.span_seconds, "trials": stats.trials, "finished": stats.finished,
        "trial_seconds_median": _median(stats.trial_seconds),
        "phase_cache": {"hits": stats.cache_hits, "trainings": stats.cache_misses, "hit_rate": stats.cache_hit_rate},
        "phases": {name: {"trainings": len(p.tokens_per_s), "tokens_per_s_median": _median(p.tokens_per_s),
                          "real_token_fraction_median": _median(p.real_token_fraction),
                          "last_epoch_train_seconds_median": _median(p.train_seconds)}
                   for name, p in stats.phases.items()},
        "retrieval": [{"target": t, "intermediate": i, "layer": layer, "scores": scores}
                      for (t, i, layer), scores in sorted(stats.retrieval.items())],
    }
