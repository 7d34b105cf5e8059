"""The study's early stopping: asynchronous successive halving (ASHA; Li et al., MLSys 2020) as
Ray's ASHAScheduler does it, with two differences the study needs.

- Its unit is a group of trials: with `seeds: N` (N > 1) the N seed trials of one configuration
  (xstilts.study.seed_groups), judged on their mean and stopped together; with `seeds: 1` each
  trial is its own group, and the rungs and cuts are Ray's. At each rung (grace_period x
  reduction_factor^k below max_t) a group continues when its mean is at or above the
  (1 - 1/reduction_factor) quantile of the other groups' means recorded there.
- A trial on its last epoch is never stopped. Ray puts a rung at max_t when grace_period x
  reduction_factor^k equals it (2, 4 or 8 target epochs at grace 1, factor 2), and
  stop_last_trials=False does not prevent a stop there: the trial has trained every epoch and
  would be killed before it logs its zero-shot results and checkpoint.

A seed that reaches a rung before its siblings goes on until the group is judged there, after
`decide_on_seeds` of its seeds reached it (0: all); each later seed's arrival judges it again on
the larger mean. A seed that already finished stays finished, and the seed analysis leaves out a
configuration with a stopped seed (xstilts.analysis.uncertainty.best_configuration). Seeds that run
one after the other (fewer slots than seeds) can train to the end while the group waits to be
judged: benchmarks/README.md measures what that costs ("seeds" mode) and what judging on fewer
seeds saves.

Imported only when a study runs (it imports Ray); module-level, so Tune can pickle it when it saves
the study for `xstilts resume`.
"""
from __future__ import annotations

import math

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from xstilts.study.seed_groups import group_key


class GroupASHA(FIFOScheduler):
    def __init__(self, time_attr: str, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: float, seeds: int = 1, decide_on_seeds: int = 0):
        super().__init__()
        self._time_attr, self._metric, self._sign = time_attr, metric, 1.0 if mode == "max" else -1.0
        self._max_t, self._rf, self._seeds = max_t, reduction_factor, seeds
        self._decide_on_seeds = min(decide_on_seeds or seeds, seeds)
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        self._rungs = [grace_period * reduction_factor ** k for k in range(count) if grace_period * reduction_factor ** k < max_t]
        self._recorded: dict[int, dict[str, float]] = {rung: {} for rung in self._rungs}  # rung -> group -> mean
        self._reported: dict[tuple[str, int], dict[str, float]] = {}  # (group, rung) -> member trial -> score
        self._stopped: set[str] = set()

    def _group(self, trial) -> str:
        # One seed: a group of one, by trial id (a searcher may propose one configuration twice).
        return group_key(trial.config) if self._seeds > 1 else trial.trial_id

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        group = self._group(trial)
        if group in self._stopped:
            return TrialScheduler.STOP
        epoch = result[self._time_attr]
        if epoch >= self._max_t:  # its last epoch: it finishes on its own (logs and checkpoints)
            return TrialScheduler.CONTINUE
        for rung in self._rungs:
            if epoch < rung:
                break
            scores = self._reported.setdefault((group, rung), {})
            if trial.trial_id in scores:  # this member was judged here already
                continue
            scores[trial.trial_id] = self._sign * float(result[self._metric])
            if len(scores) < self._decide_on_seeds:
                continue
            recorded = self._recorded[rung]
            others = [mean for other, mean in recorded.items() if other != group]
            cutoff = float(np.nanpercentile(others, (1 - 1 / self._rf) * 100)) if others else None
            recorded[group] = mean = float(np.nanmean(list(scores.values())))
            if cutoff is not None and mean < cutoff:
                self._stopped.add(group)
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        unit = "seed groups" if self._seeds > 1 else "trials"
        return f"GroupASHA: {len(self._stopped)} {unit} stopped; rungs {self._rungs}"
