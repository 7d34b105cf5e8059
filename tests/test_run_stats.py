"""The report's "How the study ran" numbers and retrieval-layer table, from hand-made trial records
(what MLflow returns), checked against values computed by hand."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from xstilts.analysis.records import TrialRecord, find_study
from xstilts.analysis.run_stats import retrieval_layer_table, run_json, run_table
from xstilts.analysis.tables import summarize
from xstilts.tasks.record_schema import FINAL_ALL_LANGUAGES, FINAL_EN_DEV, TAG_KIND, TAG_STUDY

_n = 0


def _trial(target, intermediate, *, hit=None, metrics=None, params=None, status="FINISHED", seconds=100.0):
    global _n
    _n += 1
    start = 1_000_000 + 10_000 * _n
    all_metrics = {**({"phase_cache_hit": float(hit)} if hit is not None else {}), **(metrics or {})}
    return TrialRecord(f"run{_n}", f"t{_n}", status, target, intermediate, "accuracy",
                       {"target_lr": "1e-4", **(params or {})}, all_metrics, f"/ckpt/{_n}" if status == "FINISHED" else None,
                       start, start + int(seconds * 1000))


def _phase3(rate, fraction, score):
    return {"train_tokens_per_s": rate, "train_real_token_fraction": fraction, "train_seconds": 10.0,
            FINAL_EN_DEV: score, FINAL_ALL_LANGUAGES: score - 5}


def _phase2(rate, fraction):
    return {"intermediate/train_tokens_per_s": rate, "intermediate/train_real_token_fraction": fraction,
            "intermediate/train_seconds": 30.0}


def _retrieval(layer, score):
    return {FINAL_EN_DEV: score, FINAL_ALL_LANGUAGES: score}, {"retrieval_layer": str(layer)}


@pytest.fixture
def summary():
    trials = [
        _trial("xnli", "none", metrics=_phase3(800, 0.90, 50), seconds=60),
        # trains mnli (a miss): its phase-2 numbers count
        _trial("xnli", "mnli", hit=0, metrics={**_phase2(1000, 0.80), **_phase3(700, 0.92, 52)}, seconds=200),
        # hits carry a copy of the phase-2 numbers of the trial that trained it: not counted again
        _trial("xnli", "mnli", hit=1, metrics={**_phase2(1000, 0.80), **_phase3(900, 0.94, 51)}, seconds=80),
        _trial("xnli", "qqp", hit=0, metrics={**_phase2(2000, 0.70), **_phase3(600, 0.96, 49)}, seconds=150),
        _trial("xnli", "qqp", hit=1, status="KILLED", metrics=_phase3(650, 0.95, 40), seconds=20),
    ]
    for intermediate, hit, scores in (("none", None, {8: 40.0, 12: 30.0}), ("mnli", 1, {8: 50.0, 12: 34.0})):
        for layer, score in scores.items():
            metrics, params = _retrieval(layer, score)
            trials.append(_trial("tatoeba", intermediate, hit=hit, metrics=metrics, params=params, seconds=30))
    return summarize(trials, "s")


def test_run_numbers_count_each_phase2_training_once(summary):
    run = summary.run
    assert run.trials == 9 and run.finished == 8
    # phase-cache: mnli/qqp misses (2), hits: xnli mnli, xnli qqp (killed), 2 tatoeba mnli trials
    assert (run.cache_hits, run.cache_misses) == (4, 2) and run.cache_hit_rate == pytest.approx(4 / 6)
    phase2, phase3 = run.phases["phase 2 (intermediate)"], run.phases["phase 3 (target)"]
    assert sorted(phase2.tokens_per_s) == [1000, 2000] and sorted(phase2.real_token_fraction) == [0.70, 0.80]
    assert sorted(phase3.tokens_per_s) == [600, 650, 700, 800, 900]  # every trial that trained phase 3
    assert sorted(run.trial_seconds) == [30, 30, 30, 30, 60, 80, 150, 200]  # finished only
    data = run_json(run)
    assert data["phases"]["phase 2 (intermediate)"]["tokens_per_s_median"] == 1500
    assert data["phases"]["phase 3 (target)"]["real_token_fraction_median"] == 0.94
    assert data["phase_cache"] == {"hits": 4, "trainings": 2, "hit_rate": pytest.approx(4 / 6)}
    text = run_table(run).markdown()
    assert "67% (4 hits, 2 trainings)" in text and "1,500 (1,000–2,000, n=2)" in text


def test_retrieval_layers_table_shows_each_layer_delta_and_the_selected_layer(summary):
    table = retrieval_layer_table(summary, summary.run)
    assert table.columns == ["target", "intermediate", "layer 8", "layer 12", "selected layer", "selected score"]
    rows = {row[1]: row for row in table.rows}
    assert rows["none"] == ["tatoeba", "none", "40.00", "30.00", "8", "40.00"]
    assert rows["mnli"] == ["tatoeba", "mnli", "50.00 (+10.00)", "34.00 (+4.00)", "8", "50.00"]
    assert "xnli" not in {row[0] for row in table.rows}  # not a retrieval target


def test_no_retrieval_targets_no_layer_table():
    assert retrieval_layer_table(summarize([_trial("xnli", "none", metrics=_phase3(800, 0.9, 50))]),
                                 summarize([]).run) is None


def test_find_study_reads_the_parent_runs_wall_time(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("xstilts", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id, tags={TAG_KIND: "study", TAG_STUDY: "walltime"})
    client.log_metric(parent.info.run_id, "study_wall_seconds", 3723.0)
    client.set_terminated(parent.info.run_id)
    study = find_study(uri, "xstilts", "walltime")
    assert study.metrics["study_wall_seconds"] == 3723.0
    rows = {row[0]: row[1] for row in run_table(summarize([]).run, study).rows}
    assert rows["study wall time"] == "1h 02m 03s"
