"""The Optuna define-by-run space: conditional dimensions, seeded and reproducible."""
from __future__ import annotations

import optuna
import pytest

from xstilts.study.config import ConfigError, ParamSpec
from xstilts.study.search import DefineSpace

SPACE = {
    "intermediate_lr": ParamSpec("choice", values=(1e-3, 3e-4)),
    "target_lr": ParamSpec("loguniform", low=1e-4, high=1e-2),
    "retrieval_layer": ParamSpec("choice", values=(1, 2)),
}


def _sample(space: DefineSpace, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points = []
    for _ in range(n):
        trial = study.ask()
        constants = space(trial) or {}
        points.append({**trial.params, **constants})
        study.tell(trial, 0.0)
    return points


def test_intermediate_lr_exists_only_with_a_phase_2():
    points = _sample(DefineSpace(("none", "synthetic_mnli"), SPACE), 30)
    assert {p["intermediate_task"] for p in points} == {"none", "synthetic_mnli"}
    for p in points:
        if p["intermediate_task"] == "none":
            assert p["intermediate_lr"] == 0.0
        else:
            assert p["intermediate_lr"] in (1e-3, 3e-4)
        assert 1e-4 <= p["target_lr"] <= 1e-2
        assert "retrieval_layer" not in p


def test_retrieval_target_searches_the_layer_not_a_target_lr():
    points = _sample(DefineSpace(("none", "synthetic_mnli"), SPACE, retrieval_target=True), 20)
    assert {p["retrieval_layer"] for p in points} == {1, 2}
    assert all(p["target_lr"] == 0.0 for p in points)


def test_same_seed_same_points():
    space = DefineSpace(("none", "synthetic_mnli", "synthetic_qqp"), SPACE)
    assert _sample(space, 10, seed=3) == _sample(space, 10, seed=3)
    assert _sample(space, 10, seed=3) != _sample(space, 10, seed=4)


def test_retrieval_layer_must_be_integer_choices():
    from xstilts.study.config import _param_spec

    with pytest.raises(ConfigError, match="search_space.retrieval_layer"):
        _param_spec("retrieval_layer", {"type": "uniform", "low": 1, "high": 4})
    with pytest.raises(ConfigError, match="integers"):
        _param_spec("retrieval_layer", {"type": "choice", "values": [1.5]})
    assert _param_spec("retrieval_layer", {"type": "choice", "values": [0, 3]}).values == (0, 3)


def test_grid_sampler_proposes_every_point_once(tmp_path):
    """sampler: grid: the fixed points are the whole conditional grid (none has no phase-2 rate),
    Tune's num_samples is its size times the seeds, and a continuous dimension is refused."""
    from xstilts.study.config import ConfigError, parse_config
    from xstilts.study.search import grid_points, make_searcher, trials_per_target

    raw = {"name": "g", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli"],
           "intermediate_tasks": ["none", "synthetic_mnli"], "seeds": 2,
           "search_space": {"intermediate_lr": {"type": "choice", "values": [1e-3, 3e-4]},
                            "target_lr": {"type": "choice", "values": [1e-3, 2e-3, 3e-3]}},
           "search": {"sampler": "grid", "scheduler": "fifo"},
           "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/m.db"}, "storage_path": str(tmp_path / "runs")}
    config = parse_config(raw)
    points = grid_points(config, 0)
    assert len(points) == 3 + 2 * 3 and points[0] == {"intermediate_task": "none", "target_lr": 1e-3}
    assert {"intermediate_task": "synthetic_mnli", "intermediate_lr": 3e-4, "target_lr": 3e-3} in points
    assert trials_per_target(config, 0) == 18
    assert make_searcher(config, 0).searcher._points_to_evaluate == points
    raw["search_space"]["target_lr"] = {"type": "loguniform", "low": 1e-4, "high": 1e-3}
    with pytest.raises(ConfigError, match="'search_space.target_lr': is loguniform, and a grid needs"):
        parse_config(raw)
