"""Seeds and intervals: the percentile bootstrap against direct computations, the selection of
each arm's configuration by seed-mean English dev, and the `seeds` option from config to trial."""
from __future__ import annotations

import itertools

import pytest

from xstilts.analysis.uncertainty import SeedScores, _percentile, bootstrap_delta, delta_rows


def test_bootstrap_two_seeds_against_one_is_the_hand_computed_interval():
    # Resampling [70, 74] gives means 70, 72, 74 with probabilities 1/4, 1/2, 1/4; the baseline [65]
    # is fixed: the 2.5 % and 97.5 % quantiles of the difference are 70-65 and 74-65.
    delta, low, high = bootstrap_delta([70.0, 74.0], [65.0])
    assert (delta, low, high) == (7.0, 5.0, 9.0)


def test_bootstrap_matches_the_exact_resampling_distribution():
    treated, baseline = [1.0, 2.0, 4.0], [0.0, 1.0]
    exact = sorted(sum(a) / 3 - sum(b) / 2 for a in itertools.product(treated, repeat=3)
                   for b in itertools.product(baseline, repeat=2))  # every resample, equally likely
    delta, low, high = bootstrap_delta(treated, baseline, draws=20_000)
    assert delta == pytest.approx(7 / 3 - 0.5)
    assert low == pytest.approx(_percentile(exact, 0.025), abs=0.2)
    assert high == pytest.approx(_percentile(exact, 0.975), abs=0.2)


def test_each_arm_at_its_best_seed_mean_configuration():
    scores = {
        ("xnli", "none"): {(None, "1e-5", None): SeedScores([80, 82], [60, 62]),
                           (None, "3e-5", None): SeedScores([70, 71], [90, 91])},  # better all-language, worse en dev
        ("xnli", "mnli"): {("1e-5", "1e-5", None): SeedScores([85, 86, 87], [70, 71, 72])},
        ("xnli", "qqp"): {("1e-5", "1e-5", None): SeedScores([84, 80], [59, 64])},
    }
    rows = {row.arm: row for row in delta_rows(scores, "none", draws=2000)}
    assert rows["none"].mean == 61 and rows["none"].delta is None
    assert rows["mnli"].delta == 10 and rows["mnli"].resolved and rows["mnli"].low > 0
    assert rows["qqp"].delta == pytest.approx(0.5) and not rows["qqp"].resolved


def test_seeds_option_reaches_the_trial(tmp_path):
    from xstilts.study.config import ConfigError, parse_config
    from xstilts.study.search import repeat_seeds
    from xstilts.trainables.config import SEED_INDEX_KEY, TrialConfig
    from xstilts.trainables.trial import intermediate_cache_fields

    raw = {"name": "s", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli"],
           "intermediate_tasks": ["none", "synthetic_mnli"], "seeds": 3,
           "search_space": {"intermediate_lr": {"type": "choice", "values": [1e-3]},
                            "target_lr": {"type": "choice", "values": [1e-3]}},
           "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/m.db"}, "storage_path": str(tmp_path / "runs")}
    with pytest.raises(ConfigError, match="'search.scheduler'.*use scheduler: fifo"):
        parse_config(raw)
    config = parse_config({**raw, "search": {"scheduler": "fifo"}})
    assert config.seeds == 3
    from xstilts.study.search import make_searcher

    repeater = repeat_seeds(make_searcher(config, 0), 3)
    assert type(repeater).__name__ == "Repeater" and repeater.repeat == 3
    base = {"study_name": "s", "target_task": "synthetic_xnli", "model_path": "m", "seed": 10, "storage_path": "/s",
            "phase_cache_dir": "/c", "mlflow_tracking_uri": "sqlite:///x.db", "mlflow_experiment_id": "1",
            "mlflow_parent_run_id": "p", "training": {}, "resources": {}, "intermediate_catalog": config.intermediate_catalog(),
            "intermediate_task": "synthetic_mnli", "intermediate_lr": 1e-3, "target_lr": 1e-3}
    first, third = TrialConfig.from_tune_config(base), TrialConfig.from_tune_config({**base, SEED_INDEX_KEY: 2})
    assert (first.seed, first.seed_index, third.seed, third.seed_index) == (10, 0, 12, 2)
    assert intermediate_cache_fields(first)["seed"] != intermediate_cache_fields(third)["seed"]  # phase 2 per seed
