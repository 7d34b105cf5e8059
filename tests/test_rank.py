"""`xstilts rank` on the embedded default: SEmb on the phase-1 encoder, LogME for `none` on it and
"not trained" for an intermediate whose phase 2 is not cached, the table, and its MLflow run."""
from __future__ import annotations

import pytest

from xstilts.study.config import parse_config
from xstilts.study.rank import log_ranking, rank_study, render
from xstilts.study.runner import resolve


@pytest.fixture()
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config({
        "name": "rank", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli", "synthetic_panx"],
        "intermediate_tasks": ["none", "synthetic_mnli", "synthetic_qqp"],
        "search_space": {"intermediate_lr": {"type": "choice", "values": [1e-3]},
                         "target_lr": {"type": "choice", "values": [1e-3]}},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}, "storage_path": str(tmp_path / "runs")})
    return resolve(config)


def test_rank_scores_ranks_and_logs(study, one_thread):
    result = rank_study(study, limit=48)
    xnli = result["targets"]["synthetic_xnli"]
    semb, logme = xnli["scores"]["semb"], xnli["scores"]["logme"]
    assert semb["none"] is None and all(-1.0 <= semb[name] <= 1.0 for name in ("synthetic_mnli", "synthetic_qqp"))
    assert isinstance(logme["none"], float) and logme["synthetic_mnli"] is None  # phase 2 not trained yet
    assert xnli["ranking"]["semb"] == sorted(("synthetic_mnli", "synthetic_qqp"), key=lambda n: -semb[n])
    assert xnli["ranking"]["logme"] == ["none"]
    # NER is token-level: no sentence labels for LogME
    assert set(result["targets"]["synthetic_panx"]["scores"]["logme"].values()) == {None}
    text = render(result)
    assert "not trained yet" in text and "ranking by semb: " in text

    from mlflow.tracking import MlflowClient

    run_id = log_ranking(study, result)
    run = MlflowClient(study.tracking_uri).get_run(run_id)
    assert run.data.tags["xstilts.run_kind"] == "rank" and run.info.status == "FINISHED"
    assert run.data.metrics["rank/logme/synthetic_xnli/none"] == pytest.approx(logme["none"])


def test_pruning_keeps_exactly_the_top_k_and_none():
    from xstilts.study.search import prune_intermediates

    listed = ("none", "a", "b", "c", "d")
    assert prune_intermediates(["c", "none", "a", "d", "b"], 2, listed) == ("none", "c", "a")
    assert prune_intermediates(["b"], 3, listed) == ("none", "b", "a", "c")  # unscored ones fill up to keep
    assert prune_intermediates(["d", "c"], 1, ("a", "c", "d")) == ("d",)  # `none` only when the config lists it


def test_the_search_starts_with_the_ranked_intermediates(tmp_path):
    from xstilts.study.config import ConfigError
    from xstilts.study.search import make_searcher

    raw = {"name": "r", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli"],
           "intermediate_tasks": ["none", "synthetic_mnli", "synthetic_qqp"],
           "search_space": {"intermediate_lr": {"type": "choice", "values": [1e-3]},
                            "target_lr": {"type": "choice", "values": [1e-3]}},
           "search": {"intermediates": {"rank_with": "semb", "keep": 1}},
           "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/m.db"}, "storage_path": str(tmp_path / "runs")}
    config = parse_config(raw)
    searcher = make_searcher(config, 0, intermediates=("none", "synthetic_qqp"))
    points = searcher.searcher._points_to_evaluate
    assert [p["intermediate_task"] for p in points] == ["none", "synthetic_qqp"]
    assert searcher.searcher._space.intermediate_tasks == ("none", "synthetic_qqp")
    with pytest.raises(ConfigError, match="'search.intermediates.rank_with': unknown method"):
        parse_config({**raw, "search": {"intermediates": {"rank_with": "magic"}}})
    with pytest.raises(ConfigError, match="'search.intermediates.keep'"):
        parse_config({**raw, "search": {"intermediates": {"rank_with": "logme", "keep": 0}}})
