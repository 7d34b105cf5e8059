"""The research-question analyses (xstilts.analysis.questions) and their report sections, on MLflow runs
logged here by hand with the params, tags and metrics a trial records (tasks/record_schema.py and
the mixture params: intermediate_sources / _languages / _num_languages / _sampling /
_temperature, target_train). No Ray. Every number is checked against a direct computation: the
fit against numpy.polyfit, the group means and gains by hand (in the comments)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from xstilts.analysis import questions
from xstilts.analysis.questions import (ALL_TARGETS, EN_PLUS, ENGLISH_ONLY, NON_ENGLISH_ONLY, LogFit, family_gains, fit_log,
                                intermediate_types, mixture_comparison, returns_curves, show_family_section)
from xstilts.analysis.records import find_study, iter_trials
from xstilts.analysis.report import build_sections
from xstilts.analysis.tables import summarize, xtreme_style_scores
from xstilts.tasks.record_schema import (TAG_CHECKPOINT, TAG_INTERMEDIATE, TAG_KIND, TAG_PARENT, TAG_SELECTION_METRIC,
                                 TAG_STUDY, TAG_TARGET, TAG_TRIAL_ID)
from cli_in_process import cli

approx = pytest.approx
XNLI, PANX = "synthetic_xnli", "synthetic_panx"
METRIC = {XNLI: "accuracy", PANX: "f1", "xnli": "accuracy"}


def syn(en, near, mid, far):
    return {"en": en, "near": near, "mid": mid, "far": far}


class StudyWriter:
    """Logs a study as the runner and trainables do: a parent run and nested trial runs."""

    def __init__(self, client: MlflowClient, experiment_id: str, name: str):
        self.client, self.experiment_id, self.name, self.n = client, experiment_id, name, 0
        parent = client.create_run(experiment_id, run_name=name, tags={TAG_KIND: "study", TAG_STUDY: name})
        self.parent_id = parent.info.run_id

    def trial(self, target: str, intermediate: str, scores: dict[str, float] | None, *, sources: str | None = None,
              languages: str | None = None, sampling: str = "proportional", temperature: float = 1.0,
              target_train: str = "english", status: str = "FINISHED", log_mixture_params: bool = True) -> None:
        self.n += 1
        metric = METRIC[target]
        tags = {TAG_PARENT: self.parent_id, TAG_KIND: "trial", TAG_TRIAL_ID: f"t{self.n:03d}", TAG_STUDY: self.name,
                TAG_TARGET: target, TAG_INTERMEDIATE: intermediate, TAG_SELECTION_METRIC: metric}
        run = self.client.create_run(self.experiment_id, tags=tags, start_time=1_000 * self.n)
        if sources is None:
            sources = "" if intermediate == "none" else f"{intermediate}@en"
        if languages is None:
            languages = ",".join(sorted({s.partition("@")[2] for s in sources.split(",") if s}))
        params = {"target_task": target, "intermediate_task": intermediate, "target_lr": "0.001",
                  "intermediate_lr": "0.001", "target_train": target_train}
        if log_mixture_params:
            params.update(intermediate_sources=sources, intermediate_languages=languages,
                          intermediate_num_languages=str(len([l for l in languages.split(",") if l])),
                          intermediate_sampling=sampling, intermediate_temperature=str(temperature))
        metrics = []
        if scores is not None:
            metrics.append(Metric("en_dev_score", scores["en"], 0, 1))
            for lang, value in scores.items():
                metrics += [Metric(f"final/dev/{lang}/{metric}", value, 0, 2), Metric(f"final/chance/{lang}/{metric}", 33.3, 0, 2)]
            others = [v for k, v in scores.items() if k != "en"]
            metrics += [Metric("final/en_dev_score", scores["en"], 0, 2),
                        Metric("final/all_languages_mean", sum(scores.values()) / len(scores), 0, 2),
                        Metric("final/zero_shot_mean", sum(others) / len(others), 0, 2)]
        self.client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                              tags=[RunTag(TAG_CHECKPOINT, f"/nowhere/{self.n}")] if scores and status == "FINISHED" else [])
        self.client.set_terminated(run.info.run_id, status=status)

    def done(self) -> None:
        self.client.set_terminated(self.parent_id, status="FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("questions")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("xstilts", artifact_location=(root / "artifacts").as_uri())

    # --- "returns": synthetic MNLI in 1, 2, 4 and 8 languages; two targets --------------------------
    s = StudyWriter(client, experiment_id, "returns")
    s.trial(XNLI, "none", syn(80, 60, 50, 40))  # all-language mean 57.5
    s.trial(XNLI, "synthetic_mnli", syn(82, 64, 54, 44))  # n=1: 61.0
    s.trial(XNLI, "nli_2", syn(82, 68, 56, 46), sources="synthetic_mnli@en,synthetic_mnli@near")  # n=2: 63.0
    s.trial(XNLI, "nli_2_far", syn(81, 64, 55, 48), sources="synthetic_mnli@en,synthetic_mnli@far")  # n=2: 62.0
    four = "synthetic_mnli@en,synthetic_mnli@far,synthetic_mnli@mid,synthetic_mnli@near"
    s.trial(XNLI, "nli_4", syn(83, 70, 60, 51), sources=four)  # n=4: 66.0, selected (English dev 83)
    s.trial(XNLI, "nli_4", syn(80, 75, 75, 75), sources=four)  # higher all-language mean, lower English dev: not selected
    s.trial(XNLI, "nli_4", None, sources=four, status="FAILED")  # failed: in n, never in a score
    eight = ",".join(f"xnli@{l}" for l in ("ar", "de", "en", "es", "fr", "ru", "tr", "zh"))
    s.trial(XNLI, "nli_8", syn(83, 71, 61, 51), sources=eight)  # n=8: 66.5
    s.trial(XNLI, "none", syn(80, 70, 65, 60), target_train="translate_train")  # not on the curve
    s.trial(PANX, "none", syn(60, 50, 40, 30))  # 45
    s.trial(PANX, "synthetic_mnli", syn(62, 52, 42, 32))  # 47
    s.trial(PANX, "nli_2", syn(64, 56, 44, 36), sources="synthetic_mnli@en,synthetic_mnli@near")  # 50
    s.trial(PANX, "nli_4", syn(65, 57, 47, 39), sources=four)  # 52
    s.done()

    # --- "distant": a real task, zero-shot vs translate-train ------------------------------------
    s = StudyWriter(client, experiment_id, "distant")
    order = ("en", "de", "fr", "ru", "hi", "zh", "ar", "sw")
    s.trial("xnli", "none", dict(zip(order, (85, 80, 80, 76, 70, 74, 70, 64))))
    s.trial("xnli", "none", dict(zip(order[:-1], (84, 82, 83, 79, 75, 78, 75))), target_train="translate_train")  # no sw
    s.trial("xnli", "none", None, target_train="translate_train", status="FAILED")
    s.trial("xnli", "mnli", dict(zip(order, (88, 82, 81, 78, 73, 75, 72, 66))))
    s.done()

    # --- "mixtures": English only vs English + far vs far only; an NLI and a QA intermediate ------
    s = StudyWriter(client, experiment_id, "mixtures")
    s.trial(XNLI, "none", syn(80, 60, 50, 40))  # 57.5
    s.trial(XNLI, "synthetic_mnli", syn(84, 64, 54, 44))  # 61.5
    s.trial(XNLI, "mnli_en_far", syn(83, 66, 58, 53), sources="synthetic_mnli@en,synthetic_mnli@far",
            sampling="temperature", temperature=2.0)  # 65.0
    s.trial(XNLI, "synthetic_mnli@far", syn(70, 62, 56, 56), sources="synthetic_mnli@far")  # 61.0
    s.trial(XNLI, "synthetic_squad", syn(82, 63, 52, 43))  # 60.0
    s.done()

    # --- "single": one language count, and no mixture params at all (a study from before them) ----
    s = StudyWriter(client, experiment_id, "single")
    s.trial(XNLI, "none", syn(80, 60, 50, 40), log_mixture_params=False)
    s.trial(XNLI, "synthetic_mnli", syn(82, 64, 54, 44), log_mixture_params=False)
    s.done()
    return root, uri


def summary_of(uri: str, name: str):
    return summarize(iter_trials(find_study(uri, "xstilts", name)), name)


# ------------------------------------------------------------------------------------------------
# (ii) diminishing returns
# ------------------------------------------------------------------------------------------------

def test_returns_curve_points_fit_and_threshold(store):
    _, uri = store
    curves = {c.target: c for c in returns_curves(summary_of(uri, "returns"), threshold=0.5)}
    assert set(curves) == {XNLI, PANX, ALL_TARGETS}
    c = curves[XNLI]
    # n=2 averages its two arms (63 + 62) / 2; n=4 is the English-dev pick (66), not the 75-mean trial
    assert [(p.n, p.score) for p in c.points] == [(1, approx(61.0)), (2, approx(62.5)), (4, approx(66.0)), (8, approx(66.5))]
    assert c.points[1].arms == ["nli_2", "nli_2_far"]
    assert c.baseline == approx(57.5) and [p.gain for p in c.points] == [approx(3.5), approx(5.0), approx(8.5), approx(9.0)]
    assert c.skipped == ["none [translate_train]"]
    # the fit is numpy's degree-1 polynomial in ln(n), and R^2 is 1 - SS_res / SS_tot
    ns, ys = np.array([1, 2, 4, 8.0]), np.array([61.0, 62.5, 66.0, 66.5])
    b, a = np.polyfit(np.log(ns), ys, 1)
    assert (c.fit.a, c.fit.b) == (approx(a), approx(b))
    predicted = a + b * np.log(ns)
    assert c.fit.r2 == approx(1 - np.sum((ys - predicted) ** 2) / np.sum((ys - ys.mean()) ** 2))
    # observed gain per added language: (62.5-61)/1 = 1.5, (66-62.5)/2 = 1.75, (66.5-66)/4 = 0.125
    assert [p.observed_marginal for p in c.points] == [approx(1.5), approx(1.75), approx(0.125), None]
    assert c.observed_point == 4  # from 4 languages on, the next ones bring < 0.5 each
    # fitted: the first n with f(n+1) - f(n) < 0.5, by brute force
    brute = next(n for n in range(1, 10_000) if (a + b * math.log(n + 1)) - (a + b * math.log(n)) < 0.5)
    assert c.fitted_point == brute
    assert [p.fitted_marginal for p in c.points] == [approx(b * math.log((n + 1) / n)) for n in (1, 2, 4, 8)]


def test_returns_over_all_targets_uses_the_xtreme_style_score_of_complete_arms(store):
    _, uri = store
    summary = summary_of(uri, "returns")
    c = {c.target: c for c in returns_curves(summary)}[ALL_TARGETS]
    # per arm: mean over the 2 targets of the per-language means; nli_2_far and nli_8 lack panx
    # none (57.5+45)/2 = 51.25, mnli (61+47)/2 = 54, nli_2 (63+50)/2 = 56.5, nli_4 (66+52)/2 = 59
    assert c.baseline == approx(51.25)
    assert [(p.n, p.score, p.arms) for p in c.points] == [(1, approx(54.0), ["synthetic_mnli"]),
                                                           (2, approx(56.5), ["nli_2"]), (4, approx(59.0), ["nli_4"])]
    assert c.skipped == ["nli_2_far", "nli_8", "none [translate_train]"]
    x = xtreme_style_scores(summary)
    assert x["nli_4"]["score"] == approx(59.0)  # the same aggregation as the main tables
    b, a = np.polyfit(np.log([1, 2, 4]), [54.0, 56.5, 59.0], 1)
    assert (c.fit.a, c.fit.b) == (approx(a), approx(b))


@pytest.mark.parametrize("b,threshold", [(2.0, 0.5), (1.0, 0.5), (0.72134752, 0.5), (3.0, 0.01), (0.01, 5.0), (50.0, 1e-3)])
def test_fitted_threshold_point_is_the_first_count_below_the_threshold(b, threshold):
    fit = LogFit(10.0, b, None)
    expected = next(n for n in range(1, 1_000_000) if b * math.log1p(1 / n) < threshold)
    assert fit.threshold_point(threshold) == expected


def test_no_gain_at_all_is_below_any_threshold_at_once():
    assert LogFit(60.0, -1.0, 0.9).threshold_point(0.5) == 1 and LogFit(60.0, 0.0, None).threshold_point(0.1) == 1
    with pytest.raises(ValueError):
        LogFit(60.0, 1.0, None).threshold_point(0.0)
    assert fit_log([1, 1, 1], [60, 61, 62]) is None  # one distinct count: nothing to fit
    flat = fit_log([1, 2, 4], [60, 60, 60])
    assert flat.b == approx(0.0, abs=1e-9) and flat.r2 is None


def test_a_single_language_count_and_old_records_give_no_curve(store):
    _, uri = store
    summary = summary_of(uri, "single")  # none + synthetic_mnli, no mixture params logged
    arm = questions.arm_results(summary, XNLI)[1].arm
    assert (arm.sources, arm.languages, arm.num_languages) == (("synthetic_mnli@en",), ("en",), 1)  # from the name
    assert returns_curves(summary) == []
    assert mixture_comparison(summary, XNLI) is None and intermediate_types(summary) is None
    assert not show_family_section(summary)  # synthetic languages: one family, and no translate_train
    titles = [s.title for s in build_sections(summary)]
    assert not any(t.startswith(("Diminishing", "Gains by", "English plus", "Intermediate tasks by")) for t in titles)


# ------------------------------------------------------------------------------------------------
# (i) per family and distance
# ------------------------------------------------------------------------------------------------

def test_family_and_distance_gains_by_hand(store):
    _, uri = store
    summary = summary_of(uri, "distant")
    assert summary.intermediates == ["none", "mnli", "none [translate_train]"]  # translate-train is its own row
    assert show_family_section(summary)
    result = family_gains(summary, "xnli")
    tt, mnli = "none [translate_train]", "mnli"
    assert result.arms == [mnli, tt]
    # per-language gains: tt en -1, de +2, fr +3, ru +3, hi +5, zh +4, ar +5 (no sw score)
    assert result.per_language[tt] == {"en": approx(-1), "de": approx(2), "fr": approx(3), "ru": approx(3),
                                       "hi": approx(5), "zh": approx(4), "ar": approx(5)}
    rows = {(r.grouping, r.group): r for r in result.rows}
    assert [r.group for r in result.rows if r.grouping == "distance"] == ["source", "close", "medium", "distant"]
    assert rows["distance", "close"].languages == ["de", "fr"] and rows["distance", "close"].baseline == approx(80.0)
    assert rows["distance", "close"].gains == {tt: approx(2.5), mnli: approx(1.5)}
    assert rows["distance", "medium"].gains == {tt: approx(4.0), mnli: approx(2.5)}
    distant = rows["distance", "distant"]
    assert distant.languages == ["ar", "sw", "zh"]  # the task's own order and distant.baseline == approx((74 + 70 + 64) / 3)
    assert distant.gains == {tt: approx(4.5), mnli: approx(5 / 3)}  # tt over zh, ar only: sw is missing
    assert distant.covered[tt] == ["ar", "zh"] and distant.covered[mnli] == ["ar", "sw", "zh"]
    assert rows["family", "Indo-European"].gains == {tt: approx(2.4), mnli: approx(2.2)}  # (-1+2+3+3+5)/5, (3+2+1+2+3)/5
    assert rows["family", "Niger-Congo"].gains == {tt: None, mnli: approx(2.0)}
    assert [r.group for r in result.rows if r.grouping == "family"][0] == "Indo-European"  # English's family first


def test_family_gains_need_a_baseline(store):
    _, uri = store
    summary = summary_of(uri, "distant")
    from dataclasses import replace

    without = replace(summary, cells={k: c for k, c in summary.cells.items() if k[0] != "none"},
                      intermediates=[i for i in summary.intermediates if i != "none"])
    assert family_gains(without, "xnli") is None


# ------------------------------------------------------------------------------------------------
# (iii) English only vs English + non-English; (iv) NLI vs QA
# ------------------------------------------------------------------------------------------------

def test_mixture_comparison_by_hand(store):
    _, uri = store
    result = mixture_comparison(summary_of(uri, "mixtures"), XNLI)
    rows = {r.arm.label: r for r in result.rows}
    assert [r.kind for r in result.rows] == [ENGLISH_ONLY, ENGLISH_ONLY, EN_PLUS, NON_ENGLISH_ONLY]
    assert (rows["synthetic_mnli"].delta_none, rows["synthetic_squad"].delta_none) == (approx(4.0), approx(2.5))
    mix = rows["mnli_en_far"]
    assert (mix.all_languages, mix.delta_none, mix.reference, mix.delta_reference) == (approx(65.0), approx(7.5), "synthetic_mnli", approx(3.5))
    assert mix.zero_shot == approx((66 + 58 + 53) / 3)
    assert (mix.arm.sampling, mix.arm.temperature, mix.arm.languages) == ("temperature", 2.0, ("en", "far"))
    far = rows["synthetic_mnli@far"]
    assert (far.delta_none, far.reference, far.delta_reference) == (approx(3.5), None, None)
    assert result.kind_means == {ENGLISH_ONLY: {"arms": 2, "all_languages": approx(60.75), "delta_none": approx(3.25)},
                                 EN_PLUS: {"arms": 1, "all_languages": approx(65.0), "delta_none": approx(7.5)},
                                 NON_ENGLISH_ONLY: {"arms": 1, "all_languages": approx(61.0), "delta_none": approx(3.5)}}


def test_intermediate_types_nli_vs_qa(store):
    _, uri = store
    result = intermediate_types(summary_of(uri, "mixtures"))
    assert result.types == ["NLI", "extractive QA"]
    # NLI: synthetic_mnli +4, mnli_en_far +7.5, synthetic_mnli@far +3.5 -> 5.0; QA: synthetic_squad +2.5
    assert result.gains == {"NLI": {XNLI: approx(5.0)}, "extractive QA": {XNLI: approx(2.5)}}
    assert result.best == {"NLI": {XNLI: "mnli_en_far"}, "extractive QA": {XNLI: "synthetic_squad"}}
    assert sorted(result.arms["NLI"][XNLI]) == ["mnli_en_far", "synthetic_mnli", "synthetic_mnli@far"]
    assert questions.best_type(result, XNLI) == "NLI"
    # ties and no gain say so instead of naming whichever type sorts first
    tied = questions.TypeGains(["NLI", "extractive QA"], [XNLI],
                               {"NLI": {XNLI: 1.004}, "extractive QA": {XNLI: 0.998}}, {}, {})
    assert questions.best_type(tied, XNLI) == "tie (NLI, extractive QA)"
    flat = questions.TypeGains(["NLI", "extractive QA"], [XNLI], {"NLI": {XNLI: 0.0}, "extractive QA": {XNLI: -2.0}}, {}, {})
    assert questions.best_type(flat, XNLI) == "none (no type beats none)"
    assert questions.best_type(questions.TypeGains(["NLI"], [XNLI], {"NLI": {XNLI: None}}, {}, {}), XNLI) == "–"
    # without a QA type the rows would repeat the main table: no section
    assert intermediate_types(summary_of(uri, "returns")) is None  # NLI only


# ------------------------------------------------------------------------------------------------
# The report, through the CLI
# ------------------------------------------------------------------------------------------------



def test_report_sections_plots_and_json(store):
    root, uri = store
    out = root / "report-returns"
    code, stdout, stderr = cli("report", "--study", "returns", "--out", str(out), "--tracking-uri", uri,
                               "--returns-threshold", "1.6", "--no-log")
    assert code == 0, stderr
    md = (out / "report.md").read_text()
    assert "## Diminishing returns: languages in the intermediate data" in md
    assert "## English plus non-English intermediate data" in md  # synthetic_mnli vs the nli_* mixtures
    assert (out / "returns_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "returns_curve.png" in md and 'id="returns_synthetic_xnli"' in (out / "report.html").read_text()
    data = json.loads((out / "summary.json").read_text())["questions"]
    xnli = next(c for c in data["returns"] if c["target"] == XNLI)
    assert xnli["threshold"] == 1.6 and xnli["observed_point"] == 1  # 1.5 per language from 1 to 2 is < 1.6
    b, a = np.polyfit(np.log([1, 2, 4, 8]), [61.0, 62.5, 66.0, 66.5], 1)
    assert (xnli["fit"]["a"], xnli["fit"]["b"]) == (approx(a), approx(b))
    assert xnli["fitted_point"] == next(n for n in range(1, 1000) if b * math.log1p(1 / n) < 1.6)
    row = re.search(r"^\| 8 \| nli_8 \| ([\d.]+) \| ([+\-\d.]+) \|", md, re.M)
    assert row and (row.group(1), row.group(2)) == ("66.50", "+9.00")


def test_report_family_and_mixture_sections(store):
    root, uri = store
    for study, section, image in (("distant", "Gains by language family and distance from English", "family-gains-xnli.png"),
                                  ("mixtures", "English plus non-English intermediate data", None)):
        out = root / f"report-{study}"
        code, _, stderr = cli("report", "--study", study, "--out", str(out), "--tracking-uri", uri, "--no-log")
        assert code == 0, stderr
        md = (out / "report.md").read_text()
        assert f"## {section}" in md
        if image:
            assert (out / image).stat().st_size > 5_000 and image in md
    md = (root / "report-distant" / "report.md").read_text()
    assert "| close | de fr | 80.00 | +1.50 | +2.50 |" in md  # columns: mnli, none [translate_train]
    assert "| distant | ar sw zh | 69.33 | +1.67 | +4.50 (2/3) |" in md  # translate-train has no sw score
    md = (root / "report-mixtures" / "report.md").read_text()
    assert "| mnli_en_far | English + non-English | synthetic_mnli@en, synthetic_mnli@far | T=2 | 65.00 |" in md
    assert "## Intermediate tasks by type" in md


def test_bad_returns_threshold_is_bad_input(store):
    root, uri = store
    code, _, stderr = cli("report", "--study", "returns", "--out", str(root / "x"), "--tracking-uri", uri,
                          "--returns-threshold", "0")
    assert code == 2 and "--returns-threshold" in stderr and not (root / "x").exists()


# ------------------------------------------------------------------------------------------------
# Conclusions only where the seed intervals support them (`seeds: N`)
# ------------------------------------------------------------------------------------------------

_STORE_URI: list[str] = []


def summary_of_store_returns():
    return summary_of(_STORE_URI[0], "returns")


@pytest.fixture(scope="module")
def seeded(store):
    """Three seeds per arm (one configuration each): NLI clearly ahead of QA; QA's gain on the far
    language is inside its noise; 1 -> 2 intermediate languages adds little."""
    root, uri = store
    _STORE_URI[:] = [uri]
    client = MlflowClient(uri)
    s = StudyWriter(client, client.get_experiment_by_name("xstilts").experiment_id, "seeded")
    for scores in (syn(80, 60, 50, 40), syn(81, 61, 50, 40), syn(79, 59, 50, 40)):  # 57.5, 58.0, 57.0
        s.trial(XNLI, "none", scores)
    for scores in (syn(84, 68, 58, 50), syn(85, 69, 58, 52), syn(83, 67, 57, 49)):  # 65, 66, 64
        s.trial(XNLI, "synthetic_mnli", scores)
    for scores in (syn(82, 62, 52, 44), syn(81, 61, 51, 36), syn(83, 63, 53, 40)):  # far: 44, 36, 40
        s.trial(XNLI, "synthetic_squad", scores)
    # PAN-X: one intermediate language (seeds 65, 66, 64) vs two (65.2, 65.0, 65.4); no QA arm
    for scores in (syn(80, 60, 50, 40), syn(81, 61, 50, 40), syn(79, 59, 50, 40)):
        s.trial(PANX, "none", scores)
    for scores in (syn(84, 68, 58, 50), syn(85, 69, 58, 52), syn(83, 67, 57, 49)):
        s.trial(PANX, "synthetic_mnli", scores)
    two = "synthetic_mnli@en,synthetic_mnli@near"
    for scores in (syn(84.2, 68, 58, 50.6), syn(84, 68, 58, 50), syn(83.8, 68, 58, 51.8)):
        s.trial(PANX, "nli_2", scores, sources=two)
    s.done()
    return summary_of(uri, "seeded")


def test_nli_vs_qa_is_named_only_with_an_interval_that_excludes_zero(seeded, store):
    types = intermediate_types(seeded)
    conclusion = questions.type_conclusion(seeded, types, XNLI)
    # NLI's best arm (synthetic_mnli, +7.5 over none) vs QA's (synthetic_squad): 65 - 59 = +6.0; every
    # resample of 3 seeds a side lies in [64 - 60, 66 - 57.25]: the interval excludes 0.
    assert conclusion.startswith("NLI (NLI's best arm vs extractive QA's: +6.00 [")
    low, high = map(float, re.search(r"\[([+\-\d.]+), ([+\-\d.]+)\]", conclusion).groups())
    assert 64 - 60 <= low < 6.0 < high <= 66 - 57.25
    # one seed per arm: the measured order is stated, the conclusion is not
    single = questions.type_conclusion(summary_of(store[1], "mixtures"), intermediate_types(summary_of(store[1], "mixtures")), XNLI)
    assert single.startswith("NLI ahead of extractive QA as measured; not resolved at this budget (one seed")
    table = questions.types_table(types, seeded)
    assert any("excludes 0" in note and "XNLI" not in note and "NLI (NLI's best arm" in note for note in table.notes)


def test_family_gains_carry_seed_intervals_and_only_resolved_ones_are_findings(seeded):
    result = family_gains(seeded, XNLI)
    far = next(r for r in result.rows if r.grouping == "distance" and r.languages == ["far"])
    # synthetic_mnli on far: seeds 50, 52, 49 vs none's 40, 40, 40: +10.33, interval within [+9, +12]
    mnli = far.intervals["synthetic_mnli"]
    assert mnli.delta == approx(10 + 1 / 3) and 9 <= mnli.low and mnli.high <= 12 and mnli.resolved
    # synthetic_squad on far: 44, 36, 40 vs 40, 40, 40: 0 on average, the interval straddles it
    squad = far.intervals["synthetic_squad"]
    assert squad.delta == approx(0) and squad.low < 0 < squad.high and not squad.resolved
    findings = questions.family_findings(result, "distance")
    assert f"synthetic_mnli on {far.group}: gain +10.33" in findings and f"synthetic_squad on {far.group}" not in findings
    assert findings.endswith("every other group: not resolved at this budget.")
    table = questions.family_table(result, "distance")
    row = next(r for r in table.rows if r[0] == far.group)
    assert row[3 + result.arms.index("synthetic_mnli")].endswith(" *")  # resolved: marked
    assert not row[3 + result.arms.index("synthetic_squad")].endswith(" *")


def test_returns_threshold_is_a_finding_only_when_its_interval_is_below_it(seeded):
    # PAN-X, n=1 (synthetic_mnli, seeds 65, 66, 64; selected: English dev 85 -> 66) -> n=2 (nli_2: 65.2,
    # 65.0, 65.4; selected: 84.2 -> 65.2): -0.8 per language between the selected trials, +0.2 between
    # the seed means, and every resample of the seed means lies in [65.0 - 66, 65.4 - 64] = [-1.0, +1.4]
    resolved = next(c for c in returns_curves(seeded, threshold=3.0) if c.target == PANX)
    point = resolved.points[0]
    assert point.observed_marginal == approx(-0.8) and point.marginal_interval.delta == approx(0.2)
    assert -1.0 <= point.marginal_interval.low < 0.2 < point.marginal_interval.high <= 1.4
    assert resolved.observed_resolved
    assert resolved.conclusion().startswith("observed: below the threshold from n = 1 on (gain per language +0.20 [")
    # at 0.5 the measured -0.8 is below the threshold but the interval's upper end is not
    unresolved = next(c for c in returns_curves(seeded, threshold=0.5) if c.target == PANX)
    assert unresolved.observed_point == 1 and not unresolved.observed_resolved
    assert "not resolved at this budget" in unresolved.conclusion()
    # one seed per arm: the observed point is stated as measured, never as a finding
    single = next(c for c in returns_curves(summary_of_store_returns(), threshold=1.6) if c.target == XNLI)
    assert single.observed_point == 1 and "one seed per configuration" in single.conclusion()
