"""ASHA that lets a trial that reached its last epoch finish.

Ray's ASHAScheduler puts a rung at every grace_period x reduction_factor^k up to and including
max_t, so with e.g. 4 (or 2, 8) target epochs, grace period 1 and reduction factor 2 its top rung is
the last epoch, and it can stop a trial on its last epoch's report (stop_last_trials=False does not
prevent that): the trial has trained every epoch and is killed before it logs its zero-shot results
and checkpoint. A trial at max_t is not stopped here; every rung below works as in Ray.

Imported only when a study runs (it imports Ray); module-level, so Tune can pickle it.
"""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class FinishingASHA(ASHAScheduler):
    def __init__(self, *, time_attr: str, max_t: int, **kwargs):
        super().__init__(time_attr=time_attr, max_t=max_t, stop_last_trials=False, **kwargs)
        self._last_epoch_attr, self._last_epoch = time_attr, max_t

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(self._last_epoch_attr, 0) >= self._last_epoch:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)
