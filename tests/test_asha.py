"""xstilts.study.asha.FinishingASHA: Ray's ASHA rungs, except that a trial on its last epoch is
never stopped (with 2 target epochs, grace period 1 and reduction factor 2, Ray's top rung is the
last epoch)."""
from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from xstilts.study.asha import FinishingASHA

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _decisions(scheduler) -> list[str]:
    """Two trials: `a` scores 90 at both epochs; `b` scores 95 at epoch 1 (above a's 90), then 10."""
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    for trial in (a, b):
        scheduler.on_trial_add(None, trial)
    reports = [(a, 1, 90.0), (a, 2, 90.0), (b, 1, 95.0), (b, 2, 10.0)]
    return [scheduler.on_trial_result(None, trial, {"epoch": t, "dev": score}) for trial, t, score in reports]


def test_last_epoch_is_never_a_rung_that_stops():
    settings = dict(time_attr="epoch", metric="dev", mode="max", max_t=2, grace_period=1, reduction_factor=2)
    # Ray's own scheduler stops b on its last epoch's report (its rung at max_t)...
    assert _decisions(ASHAScheduler(stop_last_trials=False, **settings))[-1] == STOP
    # ...ours lets it finish; the rungs below still stop.
    assert _decisions(FinishingASHA(**settings)) == [CONTINUE] * 4
    scheduler = FinishingASHA(**settings)
    a, c = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="c")
    scheduler.on_trial_add(None, a), scheduler.on_trial_add(None, c)
    assert scheduler.on_trial_result(None, a, {"epoch": 1, "dev": 90.0}) == CONTINUE
    assert scheduler.on_trial_result(None, c, {"epoch": 1, "dev": 5.0}) == STOP
