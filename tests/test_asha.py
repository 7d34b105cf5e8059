"""xstilts.study.asha.GroupASHA with one seed per configuration is Ray's ASHAScheduler, decision for
decision, except that a trial on its last epoch is never stopped (with 2 target epochs, grace
period 1 and reduction factor 2, Ray's top rung is the last epoch)."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from xstilts.study.asha import GroupASHA

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _trial(name: str) -> SimpleNamespace:
    # What a scheduler reads of Tune's Trial: its id and config (two trials may share a config).
    return SimpleNamespace(trial_id=name, config={"intermediate_task": "none", "target_lr": 0.001})


def _ours(time_attr: str, metric: str, mode: str, max_t: int, grace_period: int, reduction_factor: int):
    return GroupASHA(time_attr, metric, mode, max_t, grace_period, reduction_factor)


def _decisions(scheduler) -> list[str]:
    """Two trials: `a` scores 90 at both epochs; `b` scores 95 at epoch 1 (above a's 90), then 10."""
    a, b = _trial("a"), _trial("b")
    for trial in (a, b):
        scheduler.on_trial_add(None, trial)
    reports = [(a, 1, 90.0), (a, 2, 90.0), (b, 1, 95.0), (b, 2, 10.0)]
    return [scheduler.on_trial_result(None, trial, {"epoch": t, "dev": score}) for trial, t, score in reports]


def test_last_epoch_is_never_a_rung_that_stops():
    settings = dict(time_attr="epoch", metric="dev", mode="max", max_t=2, grace_period=1, reduction_factor=2)
    # Ray's own scheduler stops b on its last epoch's report (its rung at max_t)...
    assert _decisions(ASHAScheduler(stop_last_trials=False, **settings))[-1] == STOP
    # ...ours lets it finish; the rungs below still stop.
    assert _decisions(_ours(**settings)) == [CONTINUE] * 4
    scheduler = _ours(**settings)
    a, c = _trial("a"), _trial("c")
    assert scheduler.on_trial_result(None, a, {"epoch": 1, "dev": 90.0}) == CONTINUE
    assert scheduler.on_trial_result(None, c, {"epoch": 1, "dev": 5.0}) == STOP


@pytest.mark.parametrize("mode,max_t,grace,factor", [("max", 9, 1, 2), ("min", 9, 2, 2), ("max", 10, 1, 3)])
def test_one_seed_is_rays_asha_below_the_last_epoch(mode, max_t, grace, factor):
    """Twelve trials (two with the same config) report interleaved in a random order, each until
    it is stopped or reaches its last epoch; every decision is Ray's."""
    settings = dict(time_attr="epoch", metric="dev", mode=mode, max_t=max_t, grace_period=grace, reduction_factor=factor)
    rays, ours = ASHAScheduler(stop_last_trials=False, **settings), _ours(**settings)
    rng = random.Random(f"{mode}{max_t}{grace}{factor}")
    trials = [_trial(f"t{i}") for i in range(12)]
    for trial in trials:
        rays.on_trial_add(None, trial)
    epoch = {trial.trial_id: 0 for trial in trials}
    live, decisions = list(trials), 0
    while live:
        trial = rng.choice(live)
        epoch[trial.trial_id] += 1
        result = {"epoch": epoch[trial.trial_id], "dev": rng.uniform(0, 100)}
        theirs, mine = rays.on_trial_result(None, trial, result), ours.on_trial_result(None, trial, result)
        assert mine == theirs, (trial.trial_id, result)
        decisions += 1
        if mine == STOP or epoch[trial.trial_id] == max_t - 1:  # the last epoch is the one place they differ
            live.remove(trial)
    stopped = len(ours._stopped)
    assert decisions > 12 and 0 < stopped < 12  # rungs were reached, and some trials stopped, not all
