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
