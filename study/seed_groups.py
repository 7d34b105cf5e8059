"""Seeds as groups: the `seeds` option trains every configuration N times (Tune's Repeater), and
the searcher and the scheduler must see the group, not its members.

- `SeedRepeater`: Tune's Repeater tells the searcher the seeds' mean of the last reported score
  and nothing else, so OptunaSearch could not tell a group that ran to the end from one that was
  stopped, and (told everything as stopped) TPE learnt nothing. Here the searcher gets the mean of
  the final scores, with the final metric, when every seed completed; the mean of the last scores
  at the epoch they reached (so Optuna keeps it as a pruned trial's value) when the group was stopped
  or a seed of it failed (Tune's Repeater told such a group as COMPLETE when the failed seed ended
  last); a group whose every seed failed is a failed trial.
- `group_key`: the group a seed trial belongs to; the study's ASHA (xstilts.study.asha.GroupASHA)
  judges and stops seed groups on their mean.

Imported only when a study runs (it imports Ray); module-level, so Tune can pickle it when it saves
the study for `xstilts resume`.
"""
from __future__ import annotations

import json

import numpy as np
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
        self._last: dict[str, dict | None] = {}  # trial id -> its last result, None if it failed (until its group reports)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False, **kwargs):
        group = self._trial_id_to_group.get(trial_id)
        if group is None:
            return super().on_trial_complete(trial_id, result, error=error, **kwargs)
        # A failed seed (or one without a score) counts as a seed that did not complete. (Tune's
        # Repeater would pass the error on only when that seed ended last, with the other seeds'
        # mean: OptunaSearch then records the group as COMPLETE.)
        scored = not error and bool(result) and self.searcher.metric in result
        self._last[trial_id] = result if scored else None
        group.report(trial_id, result[self.searcher.metric] if scored else np.nan)
        if not group.finished_reporting():
            return None
        members = [self._last.pop(t, None) for t in group._trials]
        ended = [m for m in members if m is not None]
        if not ended:  # every seed failed: a failed trial for the searcher
            return self.searcher.on_trial_complete(group.primary_trial_id, result=None, error=True)
        mean = float(np.nanmean(group.scores()))
        if len(ended) == len(members) and all(FINAL_EN_DEV in m for m in ended):
            told = {self.searcher.metric: mean, FINAL_EN_DEV: float(np.mean([m[FINAL_EN_DEV] for m in ended]))}
        else:
            # Stopped, or a seed failed: the value Optuna keeps for a pruned trial is its last intermediate one.
            epoch = min(int(m.get(self._time_attr, 1)) for m in ended)
            self.searcher.on_trial_result(group.primary_trial_id, {self.searcher.metric: mean,
                                                                   "training_iteration": epoch})
            told = {self.searcher.metric: mean}
        return self.searcher.on_trial_complete(group.primary_trial_id, result=told, error=False)
