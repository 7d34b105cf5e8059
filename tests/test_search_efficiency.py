"""benchmarks/search_efficiency.py: the recorded-grid table, the cost and regret accounting in both
selection modes (one drawn seed, the seed mean), and the replay through the study's make_tuner,
on a tiny hand-made grid whose best configuration and costs are known."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("search_efficiency", ROOT / "benchmarks" / "search_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Ray pickles the replay trainable by value from it
    spec.loader.exec_module(module)
    return module


se = _load()

NONE = ("none", 0.0, 0.001)
NONE_FAST = ("none", 0.0, 0.003)
GOOD = ("synthetic_mnli", 0.001, 0.001)  # best on the seed mean (dev 80, 70) and truly best (70)
LUCKY = ("synthetic_mnli", 0.001, 0.003)  # one lucky seed (dev 90) but a worse mean (60) and true score (50)


def _row(key, seed, curve, all_languages):
    return {"intermediate": key[0], "intermediate_lr": key[1], "target_lr": key[2], "seed": seed,
            "en_dev": curve, "all_languages": all_languages}


TABLE = {"intermediate_epochs": 1, "trials": [
    _row(NONE, 0, [40.0, 50.0], 45.0), _row(NONE, 1, [40.0, 50.0], 45.0),
    _row(NONE_FAST, 0, [45.0, 55.0], 50.0), _row(NONE_FAST, 1, [45.0, 55.0], 50.0),
    _row(GOOD, 0, [60.0, 80.0], 70.0), _row(GOOD, 1, [50.0, 70.0], 70.0),
    _row(LUCKY, 0, [70.0, 90.0], 60.0), _row(LUCKY, 1, [30.0, 30.0], 40.0),
]}


def _trial(tid, key, epochs, final_dev):
    return {"trial_id": f"t_{tid:05d}", "key": key, "epochs": epochs, "final_dev": final_dev}


def test_grid_table_costs_and_reference():
    grid = se.Grid(TABLE)
    assert (grid.seeds, grid.target_epochs, grid.intermediate_epochs) == (2, 2, 1)
    # 4 configurations x 2 target epochs + one phase 2 (synthetic_mnli at 1e-3) x 1 epoch; x 2 seeds.
    assert grid.full_cost("one-seed") == 9 and grid.full_cost("seed-mean") == 18
    assert grid.mean_curve(GOOD) == [55.0, 75.0] and grid.mean_curve(LUCKY) == [50.0, 60.0]
    assert grid.reference() == 70.0  # GOOD: best seed-mean dev (75 > 60 > 55 > 50)
    with pytest.raises(ValueError):
        grid.repeats("best-seed")


def test_cost_curve_one_seed_lucky_seed_wins_the_selection():
    grid = se.Grid(TABLE)
    # none (2 epochs), then LUCKY's lucky seed (phase 2 + 2 epochs), then GOOD (phase 2 cached).
    trials = [_trial(0, NONE, 2, 50.0), _trial(1, LUCKY, 2, 90.0), _trial(2, GOOD, 2, 80.0)]
    curve = se.cost_curve(grid, trials, "one-seed")
    assert curve == [(2, 25.0), (5, 20.0), (7, 20.0)]  # GOOD's 80 never beats the lucky 90
    assert se.cost_to_reach(curve) == math.inf
    # A stopped trial (fewer epochs) costs what it trained and is never selected.
    curve = se.cost_curve(grid, [_trial(0, LUCKY, 1, 70.0), _trial(1, GOOD, 2, 70.0)], "one-seed")
    assert curve == [(2, math.inf), (4, 0.0)] and se.cost_to_reach(curve) == 4


def test_cost_curve_seed_mean_counts_every_seed():
    grid = se.Grid(TABLE)
    means = {key: grid.mean_curve(key)[-1] for key in (NONE, GOOD, LUCKY)}
    trials = [_trial(0, NONE, 2, means[NONE]), _trial(1, LUCKY, 2, means[LUCKY]), _trial(2, GOOD, 2, means[GOOD])]
    curve = se.cost_curve(grid, trials, "seed-mean")
    assert curve == [(4, 25.0), (10, 20.0), (14, 0.0)]  # every epoch and the phase 2 x 2 seeds
    assert se.cost_to_reach(curve) == 14 and grid.full_cost("seed-mean") == 18


def test_cost_curve_seed_groups():
    """`seeds` mode: each seed a trial, groups of consecutive trials; a group is selectable once every
    seed of it completed, on its seeds' mean; phase 2 per (intermediate, lr, seed)."""
    grid = se.Grid(TABLE)

    def seed_trial(key, seed, epochs, final_dev):
        return {**_trial(0, key, epochs, final_dev), "seed_index": seed}

    trials = [seed_trial(NONE, 0, 2, 50.0), seed_trial(NONE, 1, 2, 50.0),
              seed_trial(LUCKY, 0, 2, 90.0), seed_trial(LUCKY, 1, 1, 30.0),  # stopped: not selectable
              seed_trial(GOOD, 0, 2, 80.0), seed_trial(GOOD, 1, 2, 70.0)]
    # LUCKY trains the phase 2 of each seed (1 epoch each); GOOD (the same intermediate lr) reuses them.
    assert se.cost_curve(grid, trials, "seeds") == [(2, math.inf), (4, 25.0), (7, 25.0), (9, 25.0), (11, 25.0),
                                                    (13, 0.0)]
    with pytest.raises(ValueError, match="not one seed group"):
        se.cost_curve(grid, [seed_trial(NONE, 0, 2, 50.0), seed_trial(GOOD, 1, 2, 70.0)], "seeds")
    assert grid.full_cost("seeds") == grid.full_cost("seed-mean") == 18


def test_quantiles_and_summary_with_replays_that_never_reach():
    assert se.quantile([0.1, 0.2, 0.3, 0.4], 0.5) == pytest.approx(0.25)
    assert se.quantile([0.1, 0.2, math.inf], 0.5) == 0.2
    assert se.quantile([0.1, 0.2, math.inf], 0.75) == math.inf  # interpolating towards never
    s = se.summarize([0.1, 0.2, 0.3, math.inf], [0.0, 0.4, 3.0, 5.0])
    assert (s["median"], s["q1"], s["reached"], s["final_within"], s["replays"]) == (0.25, pytest.approx(0.175),
                                                                                     0.75, 0.5, 4)
    assert s["q3"] == math.inf
    assert se.regret_at([(2, 25.0), (5, 20.0), (7, 0.0)], 6) == 20.0 and se.regret_at([(2, 1.0)], 1) == math.inf


@pytest.fixture(scope="module")
def ray_runtime():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture()
def tiny_config(tmp_path):
    """A study config whose space is exactly the hand-made table's four configurations."""
    text = (se.CONFIG.read_text()
            .replace("intermediate_tasks: [none, synthetic_mnli, synthetic_qqp]", "intermediate_tasks: [none, synthetic_mnli]")
            .replace("values: [0.001, 0.0003]}", "values: [0.001]}")
            .replace("values: [0.0003, 0.001, 0.003]}", "values: [0.001, 0.003]}")
            .replace("target_epochs: 4", "target_epochs: 2"))
    path = tmp_path / "tiny_grid.yaml"
    path.write_text(text)
    return path


def test_replay_through_make_tuner(ray_runtime, tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    grid = se.Grid(TABLE)
    # The grid sampler on the seed means: every configuration once, each reporting its mean curve.
    trials = se.run_strategy(grid, se.STRATEGIES["grid"], 0, tmp_path / "grid", "seed-mean", tiny_config)
    assert all(t["epochs"] == 2 and t["final_dev"] == grid.mean_curve(t["key"])[-1] for t in trials)
    # In creation order, the grid's order: none at both lrs, then GOOD (its phase 2 first), LUCKY.
    assert [t["key"] for t in trials] == [NONE, NONE_FAST, GOOD, LUCKY]
    assert se.cost_curve(grid, trials, "seed-mean") == [(4, 25.0), (8, 20.0), (14, 0.0), (18, 0.0)]
    # One drawn seed per trial, TPE + ASHA (the study's default): each trial reports one recorded
    # seed's curve, possibly cut short by ASHA; the accounting follows what was trained.
    trials = se.run_strategy(grid, se.STRATEGIES["TPE+ASHA (default)"], 1, tmp_path / "tpe", "one-seed", tiny_config)
    assert len(trials) == 4
    for t in trials:
        recorded = [row["en_dev"][t["epochs"] - 1] for row in grid.runs[t["key"]]]
        assert 1 <= t["epochs"] <= 2 and t["final_dev"] in recorded
    assert se.cost_curve(grid, trials, "one-seed")[-1][0] <= 4 * 2 + 1  # 4 trials, one phase 2 at most


def test_study_seed_replay_uses_one_seed_for_every_trial(ray_runtime, tiny_config, tmp_path, monkeypatch):
    """study-seed: what a `seeds: 1` study sees, every trial trained with the study's one seed (on
    the synthetic tasks the seed also draws the dev set, so trials of one study share it)."""
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    grid = se.Grid(TABLE)
    # Replay seed 3 -> recorded seed 3 % 2 = 1 for all four configurations of the grid.
    trials = se.run_strategy(grid, se.STRATEGIES["grid"], 3, tmp_path / "grid", "study-seed", tiny_config)
    seed1 = {key: rows[1]["en_dev"][-1] for key, rows in grid.runs.items()}
    assert [(t["key"], t["final_dev"]) for t in trials] == [(k, seed1[k]) for k in (NONE, NONE_FAST, GOOD, LUCKY)]
    # Seed 1: GOOD's 70 beats LUCKY's 30, and the grid's selection is right once GOOD has run.
    assert se.cost_curve(grid, trials, "study-seed") == [(2, 25.0), (4, 20.0), (7, 0.0), (9, 0.0)]
    assert grid.full_cost("study-seed") == grid.full_cost("one-seed") == 9
