"""The research-question tables (xstilts.analysis.tables) on trial records built by hand: no Ray, no MLflow.

Expected numbers are worked out by hand in the comments.
"""
from __future__ import annotations

import json

import pytest

from xstilts.analysis.records import TrialRecord
from xstilts.analysis.select import best_per_target, best_per_target_by_rule
from xstilts.analysis.tables import (Table, comparison_tables, english_dev_table, language_gain_table, language_table,
                             selection_disagreement, selection_rules_table, study_tables, summarize, summary_json,
                             xtreme_style_scores, zero_shot_table)
from xstilts.tasks.xtreme_eval import OFFICIAL_LANGUAGES, aggregate_task_scores, xtreme_aggregate

approx = pytest.approx
XNLI, PANX = "synthetic_xnli", "synthetic_panx"
_counter = iter(range(1, 10_000))


def trial(target: str, intermediate: str, scores: dict[str, float] | None = None, *, lr: float = 1e-3,
          status: str = "FINISHED", last_epoch: float | None = None, run_id: str | None = None,
          chance: float = 33.0) -> TrialRecord:
    """A trial record as iter_trials builds it. `scores`: final dev score per language."""
    n = next(_counter)
    metric = "accuracy" if target == XNLI else "f1"
    metrics: dict[str, float] = {}
    if scores is not None:
        for lang, value in scores.items():
            metrics[f"final/dev/{lang}/{metric}"] = value
            metrics[f"final/chance/{lang}/{metric}"] = chance
        metrics["final/en_dev_score"] = scores["en"]
        metrics["final/all_languages_mean"] = sum(scores.values()) / len(scores)
        others = [v for k, v in scores.items() if k != "en"]
        metrics["final/zero_shot_mean"] = sum(others) / len(others)
    if last_epoch is not None:
        metrics["en_dev_score"] = last_epoch
    return TrialRecord(
        run_id=run_id or f"run{n}", trial_id=f"t{n}", status=status, target_task=target, intermediate_task=intermediate,
        selection_metric=metric, params={"target_lr": str(lr), "intermediate_lr": "0.001"}, metrics=metrics,
        checkpoint=f"/ckpt/{n}" if status == "FINISHED" and scores else None, start_time=1_000 + n,
    )


def langs(en, near, mid, far):
    return {"far": far, "en": en, "mid": mid, "near": near}  # not in task order on purpose


@pytest.fixture()
def records():
    return [
        # XNLI, none: en 80 / 70 -> mean 75, median 75, best 80 (selected: the first)
        trial(XNLI, "none", langs(80, 60, 50, 30), lr=1e-3),  # all-lang mean 55
        trial(XNLI, "none", langs(70, 66, 64, 60), lr=2e-3),  # all-lang mean 65: the oracle pick of the cell
        # XNLI, mnli: en 90 / 84 / 81 -> mean 85, median 84, best 90
        trial(XNLI, "synthetic_mnli", langs(90, 70, 60, 40), lr=5e-4),  # all-lang 65
        trial(XNLI, "synthetic_mnli", langs(84, 74, 64, 54), lr=1e-3),  # all-lang 69
        trial(XNLI, "synthetic_mnli", langs(81, 71, 61, 51), lr=3e-3),  # all-lang 66
        trial(XNLI, "synthetic_mnli", status="KILLED", last_epoch=50.0, lr=3e-4),  # stopped early by ASHA
        # PANX, none: one trial, en 60, all-lang (60+50+40+30)/4 = 45
        trial(PANX, "none", langs(60, 50, 40, 30)),
        # PANX, mnli: en 70, all-lang (70+56+44+30)/4 = 50
        trial(PANX, "synthetic_mnli", langs(70, 56, 44, 30)),
        trial(PANX, "synthetic_mnli", status="FAILED"),
    ]


def test_summarize_cells_and_statistics(records):
    s = summarize(iter(records), "demo")
    assert s.targets == [PANX, XNLI]
    assert s.intermediates == ["none", "synthetic_mnli"]  # the baseline first
    assert s.metrics == {XNLI: "accuracy", PANX: "f1"}
    assert s.languages[XNLI] == ["en", "near", "mid", "far"]  # the task's order, not the records'
    cell = s.cell("synthetic_mnli", XNLI)
    assert (cell.n, cell.started) == (3, 4)
    assert cell.en_dev_stats() == {"mean": approx(85.0), "median": approx(84.0), "best": approx(90.0)}
    assert cell.selected.en_dev_score == 90 and cell.selected_all_languages() == approx(65.0)
    assert cell.oracle.metrics["final/all_languages_mean"] == approx(69.0)
    assert s.cell("synthetic_mnli", PANX).started == 2 and s.cell("synthetic_mnli", PANX).n == 1
    assert s.status_counts[PANX] == {"FINISHED": 2, "FAILED": 1}
    assert s.chance[XNLI] == {"en": 33.0, "near": 33.0, "mid": 33.0, "far": 33.0}
    # one point per trial, in start order, the stopped trial with its last epoch's score
    assert len(s.points) == len(records)
    stopped = [p for p in s.points if p.status == "KILLED"]
    assert len(stopped) == 1 and stopped[0].en_dev == 50.0 and not stopped[0].completed and stopped[0].target_lr == 3e-4
    assert [p.start_time for p in s.points] == sorted(p.start_time for p in s.points)


def test_summarize_reads_the_records_once(records):
    class Once:
        def __init__(self, items):
            self.items, self.iterations = items, 0

        def __iter__(self):
            self.iterations += 1
            if self.iterations > 1:
                raise AssertionError("records read twice")
            return iter(self.items)

    source = Once(records)
    s = summarize(source)
    assert source.iterations == 1
    # the per-target best under both rules came from that one pass
    assert s.best["en_dev"][XNLI].best.en_dev_score == 90
    assert s.best["oracle_all_languages"][XNLI].best.metrics["final/all_languages_mean"] == approx(69.0)


def test_english_dev_table_with_deltas_to_none(records):
    table = english_dev_table(summarize(records))
    assert table.columns[:7] == ["intermediate task", "n", "mean", "median", "best", "Δ mean", "Δ best"]
    assert table.groups == [(f"{PANX} (f1)", 6), (f"{XNLI} (accuracy)", 6)]
    none_row, mnli_row = table.rows
    assert none_row[0] == "none (baseline)" and mnli_row[0] == "synthetic_mnli"
    # XNLI block (columns 7..12): none 2/2 75 75 80; mnli 3/4 85 84 90, Δ mean +10, Δ best +10
    assert none_row[7:13] == ["2/2", "75.00", "75.00", "80.00", "–", "–"]
    assert mnli_row[7:13] == ["3/4", "85.00", "84.00", "90.00", "+10.00", "+10.00"]
    # PANX block: mnli 1 completed of 2 started, +10 over none's 60
    assert mnli_row[1:7] == ["1/2", "70.00", "70.00", "70.00", "+10.00", "+10.00"]


def test_zero_shot_table_and_xtreme_style_score(records):
    s = summarize(records)
    table = zero_shot_table(s)
    none_row, mnli_row = table.rows
    # PANX: selected all-lang 45 (none) / 50 (mnli); zero-shot of mnli (56+44+30)/3 = 43.33
    assert none_row[1:5] == ["45.00", "–", "45.00", "40.00"]
    assert mnli_row[1:5] == ["50.00", "+5.00", "50.00", "43.33"]
    # XNLI: selected = the English-dev best: none 55 (not the oracle's 65), mnli 65; mean over trials
    # none (55+65)/2 = 60, mnli (65+69+66)/3 = 66.67
    assert none_row[5:9] == ["55.00", "–", "60.00", "46.67"]
    assert mnli_row[5:9] == ["65.00", "+10.00", "66.67", "56.67"]
    # XTREME-style: mean over the 2 targets of the per-language means: none (45+55)/2 = 50, mnli (50+65)/2 = 57.5
    assert none_row[9:] == ["50.00", "–", "2/2"]
    assert mnli_row[9:] == ["57.50", "+7.50", "2/2"]
    assert any("XTREME-style" in note and "targets present" in note for note in table.notes)
    x = xtreme_style_scores(s)
    assert x["synthetic_mnli"]["score"] == approx(57.5) and x["synthetic_mnli"]["delta_vs_none"] == approx(7.5)
    assert x["synthetic_mnli"]["per_target"] == {PANX: approx(50.0), XNLI: approx(65.0)}
    assert "all_task" not in x["synthetic_mnli"]  # not XTREME's nine tasks


def test_xtreme_style_delta_is_over_the_targets_both_rows_have():
    records = [
        trial(XNLI, "none", langs(80, 60, 40, 20)),  # all-lang 50
        trial(XNLI, "synthetic_qqp", langs(80, 64, 44, 24)),  # 53
        trial(PANX, "synthetic_qqp", langs(90, 90, 90, 90)),  # 90: no baseline for PANX
    ]
    x = xtreme_style_scores(summarize(records))
    assert x["synthetic_qqp"]["score"] == approx((53 + 90) / 2)
    assert x["synthetic_qqp"]["targets"] == [PANX, XNLI]
    assert x["synthetic_qqp"]["delta_vs_none"] == approx(3.0)  # over XNLI only
    assert x["synthetic_qqp"]["delta_over_targets"] == [XNLI]
    row = zero_shot_table(summarize(records)).rows[0]
    assert row[0] == "none (baseline)" and row[-1] == "1/2" and row[1] == "–"  # no PANX cell for none


def test_language_tables_and_gains(records):
    s = summarize(records)
    table = language_table(s, XNLI)
    assert table.columns == ["intermediate task", "en", "near", "mid", "far", "all languages"]
    assert table.rows[0] == ["none (baseline)", "80.00", "60.00", "50.00", "30.00", "55.00"]
    assert table.rows[1] == ["synthetic_mnli", "90.00", "70.00", "60.00", "40.00", "65.00"]
    assert table.rows[2][0] == "majority class" and table.rows[2][1:] == ["33.00"] * 5
    gains = language_gain_table(s, PANX)
    assert gains.rows == [["synthetic_mnli", "+10.00", "+6.00", "+4.00", "+0.00", "+5.00"]]


def test_selection_rules_oracle_labelled_and_disagreement_counted(records):
    s = summarize(records)
    d = selection_disagreement(s)
    # XNLI: English dev picks mnli's en-90 trial (all-lang 65), the oracle mnli's all-lang-69 trial
    assert (d["targets"], d["targets_differ"], d["differing_targets"]) == (2, 1, [XNLI])
    # cells: XNLI/none and XNLI/mnli differ; the PANX cells have one completed trial each
    assert (d["cells"], d["cells_differ"]) == (4, 2)
    assert d["oracle_gap_all_languages"] == {PANX: approx(0.0), XNLI: approx(4.0)}
    table = selection_rules_table(s)
    rules = [row[1] for row in table.rows]
    assert rules == ["English dev", "ORACLE: all-language dev"] * 2
    xnli_rows = [row for row in table.rows if row[0] == XNLI]
    assert [row[6] for row in xnli_rows] == ["90.00", "84.00"] and [row[7] for row in xnli_rows] == ["65.00", "69.00"]
    assert all(row[-1] == "differ" for row in xnli_rows)
    assert any("1 of 2 target(s)" in note and "2 of 4" in note for note in table.notes)
    assert any("upper bound" in note for note in table.notes)


def test_selection_agrees_with_best_per_target(records):
    by_rule = best_per_target_by_rule(records)
    for rule in ("en_dev", "oracle_all_languages"):
        single = best_per_target(records, rule)
        assert {t: s.best.run_id for t, s in single.items()} == {t: s.best.run_id for t, s in by_rule[rule].items()}
        assert {t: s.candidates for t, s in single.items()} == {PANX: 2, XNLI: 5}
    s = summarize(records)
    assert s.best["en_dev"][XNLI].best.run_id == by_rule["en_dev"][XNLI].best.run_id


def test_ties_keep_the_first_trial():
    first = trial(XNLI, "none", langs(80, 50, 50, 50), run_id="first")
    second = trial(XNLI, "none", langs(80, 50, 50, 50), run_id="second")
    assert summarize([first, second]).cell("none", XNLI).selected.run_id == "first"


def test_no_baseline_means_no_deltas_and_no_gains():
    s = summarize([trial(XNLI, "synthetic_mnli", langs(90, 80, 70, 60))])
    assert not s.has_baseline
    assert english_dev_table(s).rows[0][5:] == ["–", "–"]
    assert language_gain_table(s, XNLI) is None
    assert any("No `none`" in note for note in english_dev_table(s).notes)
    assert xtreme_style_scores(s)["synthetic_mnli"]["delta_vs_none"] is None


def test_empty_study():
    s = summarize([])
    assert s.targets == [] and s.intermediates == []
    tables = study_tables(s)
    assert [t.key for t in tables] == ["english_dev", "zero_shot", "selection_rules"]
    for table in tables:
        assert table.rows == [] and table.markdown() and table.html() and table.text()
    only_failed = summarize([trial(XNLI, "none", status="FAILED")])
    assert only_failed.cell("none", XNLI).n == 0 and only_failed.best["en_dev"] == {}
    assert english_dev_table(only_failed).rows[0][1:4] == ["0/1", "–", "–"]


def test_comparison_tables_side_by_side(records):
    a = summarize(records, "study-a")
    b = summarize([trial(XNLI, "none", langs(70, 50, 50, 50)), trial(XNLI, "synthetic_qqp", langs(75, 60, 50, 40))], "study-b")
    xtreme, best = comparison_tables([a, b])
    assert xtreme.groups == [("study-a", 3), ("study-b", 3)]
    assert [row[0] for row in xtreme.rows] == ["none (baseline)", "synthetic_mnli", "synthetic_qqp"]
    assert xtreme.rows[1] == ["synthetic_mnli", "57.50", "+7.50", "2/2", "–", "–", "–"]
    # study-b: none 55, qqp 56.25 over its single target
    assert xtreme.rows[2] == ["synthetic_qqp", "–", "–", "–", "56.25", "+1.25", "1/1"]
    assert [row[0] for row in best.rows] == [PANX, XNLI]
    assert best.rows[1][1:] == ["synthetic_mnli", "90.00", "65.00", "5", "synthetic_qqp", "75.00", "56.25", "2"]
    assert best.rows[0][5:] == ["–"] * 4


def test_summary_json_round_trips(records):
    data = summary_json(summarize(records, "demo"))
    assert json.loads(json.dumps(data)) == data
    cell = data["cells"]["synthetic_mnli"][XNLI]
    assert cell["en_dev"] == {"mean": approx(85.0), "median": approx(84.0), "best": approx(90.0)}
    assert cell["en_dev_delta_vs_none"]["best"] == approx(10.0)
    assert cell["selected"]["target_lr"] == 5e-4 and cell["oracle"]["all_languages"] == approx(69.0)
    assert data["selection_disagreement"]["targets_differ"] == 1
    assert data["best"]["oracle_all_languages"][XNLI]["completed_trials"] == 5


def test_table_renderings_escape_and_group():
    table = Table("k", "A <title> | x", ["row", "a", "b", "c"], [["r|1", "<b>", "2", "3"]],
                  groups=[("g1", 2)], notes=["note & more"])
    md = table.markdown()
    assert "| row | g1 a | g1 b | c |" in md and "r\\|1" in md and "|:---|---:|---:|---:|" in md
    page = table.html()
    assert '<th colspan="2" class="group">g1</th>' in page and "&lt;b&gt;" in page and "<b>" not in page
    assert 'rowspan="2">c</th>' in page and "note &amp; more" in page
    text = table.text().splitlines()
    assert text[0] == "A <title> | x" and "g1" in text[1] and text[2].split() == ["row", "a", "b", "c"]


def test_shared_xtreme_aggregation_helpers():
    # groups only when complete, all_task only with all nine tasks (the official behaviour)
    assert aggregate_task_scores({"xnli": 80.0, "pawsx": 90.0, "panx": 60.0}) == {"classification": approx(85.0)}
    everything = {task: float(n) for n, task in enumerate(OFFICIAL_LANGUAGES)}
    full = aggregate_task_scores(everything)
    assert full["all_task"] == approx(sum(range(9)) / 9) and set(full) == {"classification", "tagging", "qa", "retrieval", "all_task"}
    result = xtreme_aggregate({"xnli": {"en": 80.0, "de": 70.0}, "synthetic_panx": {"en": 50.0}})
    assert result["tasks"] == {"xnli": 75.0, "synthetic_panx": 50.0}
    assert result["mean_over_tasks"] == approx(62.5) and "classification" not in result and "all_task" not in result
    assert xtreme_aggregate({})["mean_over_tasks"] is None


def test_best_model_per_target_composite(records):
    """The paper's composite: the best trial per target over every intermediate task, then the
    XTREME-style score and its difference to `none`'s over the same targets."""
    from xstilts.analysis.tables import best_per_target_scores, best_per_target_table

    composite = best_per_target_scores(summarize(records))
    # English dev: XNLI -> mnli en 90 (all-lang 65), PANX -> mnli en 70 (50): (65 + 50) / 2 = 57.5;
    # none over the same targets: (55 + 45) / 2 = 50 -> +7.5
    honest = composite["en_dev"]
    assert honest["arms"] == {XNLI: "synthetic_mnli", PANX: "synthetic_mnli"}
    assert honest["score"] == approx(57.5) and honest["delta_vs_none"] == approx(7.5)
    # oracle (all-language dev): XNLI -> mnli lr 1e-3 (69), PANX -> mnli (50): 59.5, +9.5
    assert composite["oracle_all_languages"]["score"] == approx(59.5)
    assert composite["oracle_all_languages"]["delta_vs_none"] == approx(9.5)
    table = best_per_target_table(summarize(records))
    assert table.rows[0][-2:] == ["57.50", "+7.50"] and table.rows[1][-2:] == ["59.50", "+9.50"]


def test_ranking_vs_outcome(records):
    """A ranking read back from MLflow next to the measured order: XNLI measured mnli 65 > none 55."""
    from xstilts.analysis.ranking import ranking_rows, ranking_table

    rankings = {"logme": {XNLI: {"none": 0.9, "synthetic_mnli": 0.1, "unmeasured": 2.0}}}
    (row,) = ranking_rows(summarize(records), rankings)
    assert row["predicted"] == ["none", "synthetic_mnli"] and row["measured"] == ["synthetic_mnli", "none"]
    # relevance = score - 55: mnli 10, none 0; predicted none first: DCG = 0 + 10/log2(3); ideal = 10
    assert row["ndcg@3"] == approx(1 / 1.5849625, rel=1e-6)
    assert row["regret@1"] == approx(100 * (65 - 55) / 65) and row["regret@3"] == 0.0
    assert row["phase2_with_top3"] == 1 and row["phase2_all"] == 1
    assert ranking_table(summarize(records), rankings).rows[0][:2] == ["logme", XNLI]


def test_xtreme_r_score_by_hand():
    from xstilts.tasks.xtreme_eval import XTREME_R_LANGUAGES, xtreme_r_score

    assert len(XTREME_R_LANGUAGES) == 10 and len(XTREME_R_LANGUAGES["panx"]) == 48
    assert len(XTREME_R_LANGUAGES["udpos"]) == 38 and len(XTREME_R_LANGUAGES["tatoeba"]) == 41
    # XNLI on two of its languages, XCOPA on one, and a language outside XCOPA's list (en) left out
    partial = xtreme_r_score({"xnli": {"en": 80.0, "de": 70.0}, "xcopa": {"et": 60.0, "en": 99.0},
                              "synthetic_xnli": {"en": 10.0}})
    assert partial["tasks"] == {"xnli": 75.0, "xcopa": 60.0} and partial["score"] == approx(67.5)
    assert partial["coverage"] == {"xnli": (2, 15), "xcopa": (1, 11)} and not partial["complete"]
    assert "mewsli_x" in partial["missing_tasks"] and xtreme_r_score({"synthetic_xnli": {"en": 1.0}}) is None
    # every task on every language: the task n scores n everywhere -> the mean over tasks of n
    full = xtreme_r_score({task: {lang: float(n) for lang in languages}
                           for n, (task, languages) in enumerate(XTREME_R_LANGUAGES.items())})
    assert full["complete"] and full["score"] == approx(sum(range(10)) / 10)


def test_best_model_per_target_composite_has_xtreme_r_over_its_tasks():
    from xstilts.analysis.tables import best_per_target_scores, best_per_target_table

    def real(target, intermediate, scores):
        record = trial(target, intermediate, None)
        metrics = {f"final/dev/{lang}/accuracy": v for lang, v in scores.items()}
        metrics.update({"final/en_dev_score": scores["en"], "final/all_languages_mean": sum(scores.values()) / len(scores)})
        return TrialRecord(**{**record.__dict__, "selection_metric": "accuracy", "metrics": metrics,
                              "checkpoint": "/ckpt/x", "status": "FINISHED"})

    records = [real("xnli", "none", {"en": 80.0, "de": 60.0}),  # 70
               real("xnli", "mnli", {"en": 84.0, "de": 70.0}),  # 77
               real("pawsx", "none", {"en": 90.0, "de": 80.0}),  # not an XTREME-R task
               real("pawsx", "mnli", {"en": 91.0, "de": 79.0})]
    x = best_per_target_scores(summarize(records))["en_dev"]["xtreme_r"]
    assert x["tasks"] == {"xnli": approx(77.0)} and x["delta_vs_none"] == approx(7.0) and not x["complete"]
    table = best_per_target_table(summarize(records))
    assert table.columns[-2:] == ["XTREME-R", "Δ XTREME-R"]
    assert table.rows[0][-2:] == ["77.00 (1/10 tasks)", "+7.00"]
