"""`seeds` > 1 with ASHA (xstilts.study.seed_groups), through the study's own make_tuner on a real
Ray runtime and a real Optuna study: the scheduler stops a configuration on its seeds' mean, every
seed of it, and the searcher is told the seed mean, as complete only when every seed completed."""
from __future__ import annotations

import math
import sys

import optuna
import pytest

from xstilts.study.config import parse_config
from xstilts.study.runner import make_tuner
from xstilts.study.search import SELECTION_METRIC, TIME_ATTR
from xstilts.tasks.record_schema import FINAL_EN_DEV

# (intermediate, target lr) -> each seed's English dev per epoch (4 epochs: ASHA rungs at 1 and 2).
CURVES = {
    ("none", 0.001): [[50, 50, 50, 50], [50, 50, 50, 50]],  # first: nothing to compare with, runs to the end
    ("none", 0.003): [[10, 10, 10, 10], [30, 30, 30, 30]],  # mean 20 < 50 at rung 1: stopped
    ("synthetic_mnli", 0.001): [[60, 70, 80, 90], [80, 90, 90, 90]],  # mean 70, then 80: above every cut
    ("synthetic_mnli", 0.003): [[40, 40, 40, 40], [40, 40, 40, 40]],  # mean 40 < median(50, 20, 70) = 50
}


def replay_seed_curve(config: dict, curves: dict = None) -> None:
    from ray import tune

    curve = curves[config["intermediate_task"], config["target_lr"]][config["__trial_index__"]]
    for epoch, score in enumerate(curve, start=1):
        final = {FINAL_EN_DEV: float(score)} if epoch == len(curve) else {}
        tune.report({SELECTION_METRIC: float(score), TIME_ATTR: epoch, **final})


@pytest.fixture(scope="module")
def ray_runtime():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_asha_stops_seed_groups_on_their_mean(ray_runtime, tmp_path):
    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    config = parse_config({
        "name": "seed-groups", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli"],
        "intermediate_tasks": ["none", "synthetic_mnli"], "seeds": 2,
        "search_space": {"intermediate_lr": {"type": "choice", "values": [0.001]},
                         "target_lr": {"type": "choice", "values": [0.001, 0.003]}},
        # The grid's order and one configuration at a time, so every cut is known in advance.
        "search": {"sampler": "grid", "scheduler": "asha", "grace_period": 1, "reduction_factor": 2},
        "max_concurrent_trials": 1, "training": {"target_epochs": 4},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}, "storage_path": str(tmp_path / "runs"),
    })
    storage = f"sqlite:///{tmp_path}/optuna.db"
    trainable = tune.with_resources(tune.with_parameters(replay_seed_curve, curves=CURVES), {"cpu": 0.5})
    results = make_tuner(trainable, config, 0, {}, str(tmp_path / "tune"), [], optuna_storage=storage,
                         optuna_study_name="seed-groups/synthetic_xnli").fit()
    assert not [r for r in results if r.error]
    trained = {}
    for r in results:
        key = (r.config["intermediate_task"], r.config["target_lr"])
        trained.setdefault(key, []).append((r.metrics[TIME_ATTR], FINAL_EN_DEV in r.metrics))
    assert sorted(trained[("none", 0.001)]) == [(4, True), (4, True)]
    assert sorted(trained[("synthetic_mnli", 0.001)]) == [(4, True), (4, True)]
    for stopped in (("none", 0.003), ("synthetic_mnli", 0.003)):
        # Judged on its first seed to reach rung 1 (decide_on_seeds: 1, the default), the group is
        # stopped there; its sibling is stopped at its next report, before it could run to the end.
        runs = trained[stopped]
        assert len(runs) == 2 and all(epochs <= 2 and not final for epochs, final in runs), runs
    # Optuna: one trial per configuration, valued at the seeds' mean; complete only when both seeds were.
    study = optuna.load_study(study_name="seed-groups/synthetic_xnli", storage=storage)
    told = {(t.params["intermediate_task"], t.params["target_lr"]): (t.state, t.value if t.value is not None
                                                                      else t.intermediate_values[max(t.intermediate_values)])
            for t in study.trials}
    complete, pruned = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    assert told[("none", 0.001)] == (complete, 50.0)
    assert told[("synthetic_mnli", 0.001)] == (complete, 90.0)
    assert told[("none", 0.003)] == (pruned, 20.0)
    assert told[("synthetic_mnli", 0.003)][0] == pruned and math.isclose(told[("synthetic_mnli", 0.003)][1], 40.0)


def test_seeds_with_asha_is_a_valid_config(tmp_path):
    """The combination the config check refused before seed groups existed."""
    config = parse_config({"name": "s", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli"],
                           "intermediate_tasks": ["none"], "seeds": 3, "search": {"scheduler": "asha"},
                           "training": {"target_epochs": 6},
                           "search_space": {"target_lr": {"type": "choice", "values": [0.001]}},
                           "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
                           "storage_path": str(tmp_path / "runs")})
    from xstilts.study.asha import GroupASHA
    from xstilts.study.search import make_scheduler

    scheduler = make_scheduler(config)
    assert isinstance(scheduler, GroupASHA) and scheduler._rungs == [1, 2, 4]  # as Ray's ASHA: 1 x 2^k < 6


def test_a_configuration_with_a_stopped_seed_is_not_selected_on_its_finished_ones():
    from xstilts.analysis.uncertainty import SeedScores, best_configuration

    raced_ahead = SeedScores(en_dev=[95.0], all_languages=[60.0], languages=[{"en": 95.0}], stopped=1)
    complete = SeedScores(en_dev=[80.0, 82.0], all_languages=[70.0, 71.0], languages=[{"en": 80.0}, {"en": 82.0}])
    assert best_configuration({"a": raced_ahead, "b": complete}) is complete
    assert best_configuration({"a": raced_ahead}) is None


def _judge(scheduler, group: str, seed: int, epoch: int, score: float) -> str:
    """One seed trial's report to the scheduler (a trial is what Tune passes: its id and config)."""
    from types import SimpleNamespace

    trial = SimpleNamespace(trial_id=f"{group}-{seed}", config={"intermediate_task": group, "__trial_index__": seed})
    return scheduler.on_trial_result(None, trial, {TIME_ATTR: epoch, SELECTION_METRIC: score})


@pytest.mark.parametrize("decide_on_seeds", [0, 1])
def test_a_seed_group_is_judged_once_enough_seeds_reached_the_rung_then_again_per_seed(decide_on_seeds):
    from ray.tune.schedulers import TrialScheduler

    from xstilts.study.asha import GroupASHA

    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    scheduler = GroupASHA(TIME_ATTR, SELECTION_METRIC, "max", max_t=4, grace_period=1, reduction_factor=2,
                              seeds=2, decide_on_seeds=decide_on_seeds)
    assert scheduler._rungs == [1, 2]
    for seed in (0, 1):
        assert _judge(scheduler, "a", seed, 1, 50.0) == go  # the first group: nothing to compare with
    # b's first seed is below a's 50. Judged on one seed it is stopped at once; judged on the
    # whole group it waits for its sibling, whose report completes a mean of 20 < 50.
    assert _judge(scheduler, "b", 0, 1, 20.0) == (stop if decide_on_seeds == 1 else go)
    assert _judge(scheduler, "b", 1, 1, 20.0) == stop
    assert _judge(scheduler, "b", 0, 2, 20.0) == stop  # a stopped group's seeds stay stopped
    # c: its first seed (60) passes the cut of 35 (the median of a 50 and b 20); with its second
    # seed (0) the mean is 30 < 35: judged again, it is stopped (on the whole group: at once).
    assert _judge(scheduler, "c", 0, 1, 60.0) == go
    assert _judge(scheduler, "c", 1, 1, 0.0) == stop
    assert _judge(scheduler, "a", 0, 4, 50.0) == go  # the last epoch: never stopped there
    assert sorted(scheduler._recorded[1].values()) == [20.0, 30.0, 50.0]  # what later groups are cut against


def seed_curve_or_error(config: dict) -> None:
    """none/1e-3's second seed fails after its first epoch; every other seed trains 2 epochs."""
    from ray import tune

    failing = config["target_lr"] == 0.001 and config["__trial_index__"] == 1
    scores = {0.001: [50.0, 30.0], 0.003: [60.0, 70.0]}[config["target_lr"]]
    score = scores[config["__trial_index__"]]
    for epoch in (1, 2):
        if failing and epoch == 2:
            raise RuntimeError("this seed's worker died")
        final = {FINAL_EN_DEV: score} if epoch == 2 else {}
        tune.report({SELECTION_METRIC: score, TIME_ATTR: epoch, **final})


def test_a_seed_group_with_a_failed_seed_is_told_as_not_complete(ray_runtime, tmp_path):
    """Whichever of its seeds ends last (the failed one goes through Tune's own Repeater), the
    group is not told COMPLETE: its mean is not over every seed's final score."""
    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    config = parse_config({
        "name": "seed-error", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli"],
        "intermediate_tasks": ["none"], "seeds": 2,
        "search_space": {"target_lr": {"type": "choice", "values": [0.001, 0.003]}},
        "search": {"sampler": "grid", "scheduler": "fifo"}, "max_concurrent_trials": 1,
        "training": {"target_epochs": 2},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}, "storage_path": str(tmp_path / "runs"),
    })
    storage = f"sqlite:///{tmp_path}/optuna.db"
    trainable = tune.with_resources(seed_curve_or_error, {"cpu": 0.5})
    results = make_tuner(trainable, config, 0, {}, str(tmp_path / "tune"), [], optuna_storage=storage,
                         optuna_study_name="seed-error/synthetic_xnli").fit()
    assert [(r.config["target_lr"], r.config["__trial_index__"]) for r in results if r.error] == [(0.001, 1)]
    study = optuna.load_study(study_name="seed-error/synthetic_xnli", storage=storage)
    told = {t.params["target_lr"]: t for t in study.trials}
    assert told[0.003].state == optuna.trial.TrialState.COMPLETE and told[0.003].value == 65.0
    assert told[0.001].state == optuna.trial.TrialState.PRUNED
