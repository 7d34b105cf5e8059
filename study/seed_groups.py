"""Seeds as groups: the `seeds` option trains every configuration N times (Tune's Repeater), and
the searcher and the scheduler must see the group, not its members.

- `SeedRepeater`: Tune's Repeater tells the searcher the seeds' mean of the last reported score
  and nothing else, so OptunaSearch could not tell a group that ran to the end from one that was
  stopped, and (told everything as stopped) TPE learnt nothing. Here the searcher gets the mean of
  the final scores, with the final metric, when every seed completed; the mean of the last scores
  at the epoch they reached (so Optuna keeps it as a pruned trial's value) when the group was stopped.
- `SeedGroupASHA`: asynchronous successive halving (Li et al., MLSys 2020, as Ray's ASHAScheduler)
  whose unit is the seed group: at each rung the group's mean over its seeds is compared with the
  other groups' means at that rung, and a group below the cut is stopped, every seed of it. A seed
  that reaches a rung before its siblings goes on until the group's mean exists; a seed that has
  already finished stays finished, and the seed analysis leaves out a configuration with a stopped
  seed (xstilts.analysis.uncertainty.best_configuration). Seeds that run one after the other (fewer
  slots than seeds) therefore often train to the end before their group is stopped: the cost
  benchmarks/README.md measures ("seeds" mode).

Imported only when a study runs (it imports Ray); module-level classes, so Tune can pickle them when
it saves the study for `xstilts resume`.
"""
from __future__ import annotations

import json
import math

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Repeater
from ray.tune.search.repeater import TRIAL_INDEX

from xstilts.tasks.record_schema import FINAL_EN_DEV


def group_key(config: dict) -> str:
    """The configuration a seed trial belongs to: its config without the seed index."""
    return json.dumps({k: v for k, v in config.items() if k != TRIAL_INDEX}, sort_keys=True, default=repr)


class SeedRepeater(Repeater):
    """Tune's Repeater that tells the searcher whether the group completed (see the module doc)."""

    def __init__(self, searcher, repeat: int, time_attr: str):
        super().__init__(searcher, repeat=repeat)
        self._time_attr = time_attr
        self._last: dict[str, dict] = {}  # trial id -> its last result (kept until its group reports)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False, **kwargs):
        group = self._trial_id_to_group.get(trial_id)
        if group is None or error or not result or self.searcher.metric not in result:
            return super().on_trial_complete(trial_id, result, error=error, **kwargs)
        self._last[trial_id] = result
        group.report(trial_id, result[self.searcher.metric])
        if not group.finished_reporting():
            return None
        members = [self._last.pop(t, None) for t in group._trials]
        ended = [m for m in members if m is not None]
        mean = float(np.nanmean(group.scores()))
        if len(ended) == len(members) and all(FINAL_EN_DEV in m for m in ended):
            told = {self.searcher.metric: mean, FINAL_EN_DEV: float(np.mean([m[FINAL_EN_DEV] for m in ended]))}
        else:
            # Stopped: the value Optuna keeps for a pruned trial is its last intermediate one.
            epoch = min(int(m.get(self._time_attr, 1)) for m in ended)
            self.searcher.on_trial_result(group.primary_trial_id, {self.searcher.metric: mean,
                                                                   "training_iteration": epoch})
            told = {self.searcher.metric: mean}
        return self.searcher.on_trial_complete(group.primary_trial_id, result=told, error=False)


class SeedGroupASHA(FIFOScheduler):
    """ASHA on seed-group means (see the module doc). Rungs as Ray's ASHAScheduler: grace_period x
    reduction_factor^k below max_t; at a rung, a group continues when its mean is at or above the
    (1 - 1/reduction_factor) quantile of the means recorded there before it."""

    def __init__(self, time_attr: str, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: float, seeds: int):
        super().__init__()
        self._time_attr, self._metric, self._sign = time_attr, metric, 1.0 if mode == "max" else -1.0
        self._max_t, self._rf, self._seeds = max_t, reduction_factor, seeds
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        self._rungs = [grace_period * reduction_factor ** k for k in range(count) if grace_period * reduction_factor ** k < max_t]
        self._recorded: dict[int, dict[str, float]] = {rung: {} for rung in self._rungs}  # rung -> group -> mean
        self._reported: dict[tuple[str, int], dict[str, float]] = {}  # (group, rung) -> seed trial -> score
        self._stopped: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        group = group_key(trial.config)
        if group in self._stopped:
            return TrialScheduler.STOP
        epoch = result[self._time_attr]
        if epoch >= self._max_t:  # its last epoch: it finishes on its own (logs and checkpoints)
            return TrialScheduler.CONTINUE
        for rung in self._rungs:
            if epoch < rung:
                break
            scores = self._reported.setdefault((group, rung), {})
            scores.setdefault(trial.trial_id, self._sign * float(result[self._metric]))
            if len(scores) < self._seeds or group in self._recorded[rung]:
                continue
            recorded = self._recorded[rung]
            cutoff = float(np.nanpercentile(list(recorded.values()), (1 - 1 / self._rf) * 100)) if recorded else None
            recorded[group] = mean = float(np.nanmean(list(scores.values())))
            if cutoff is not None and mean < cutoff:
                self._stopped.add(group)
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"SeedGroupASHA: {len(self._stopped)} seed groups stopped; rungs {self._rungs}"
