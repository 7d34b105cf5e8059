"""Seeds and intervals: the percentile bootstrap against direct computations, the selection of
each arm's configuration by seed-mean English dev, and the `seeds` option from config to trial."""
from __future__ import annotations

import itertools

import pytest
from pytest import approx

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
    from xstilts.study.config import parse_config
    from xstilts.study.search import repeat_seeds
    from xstilts.trainables.config import SEED_INDEX_KEY, TrialConfig
    from xstilts.trainables.trial import intermediate_cache_fields

    raw = {"name": "s", "model": "embedded:tiny-xlmr", "target_tasks": ["synthetic_xnli"],
           "intermediate_tasks": ["none", "synthetic_mnli"], "seeds": 3,
           "search_space": {"intermediate_lr": {"type": "choice", "values": [1e-3]},
                            "target_lr": {"type": "choice", "values": [1e-3]}},
           "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/m.db"}, "storage_path": str(tmp_path / "runs")}
    config = parse_config({**raw, "search": {"scheduler": "fifo"}})
    assert config.seeds == 3 and parse_config(raw).search.scheduler == "asha"  # seed groups: tests/test_seed_groups.py
    from xstilts.study.search import make_searcher

    repeater = repeat_seeds(make_searcher(config, 0), 3)
    assert type(repeater).__name__ == "SeedRepeater" and repeater.repeat == 3
    base = {"study_name": "s", "target_task": "synthetic_xnli", "model_path": "m", "seed": 10, "storage_path": "/s",
            "phase_cache_dir": "/c", "mlflow_tracking_uri": "sqlite:///x.db", "mlflow_experiment_id": "1",
            "mlflow_parent_run_id": "p", "training": {}, "resources": {}, "intermediate_catalog": config.intermediate_catalog(),
            "intermediate_task": "synthetic_mnli", "intermediate_lr": 1e-3, "target_lr": 1e-3}
    first, third = TrialConfig.from_tune_config(base), TrialConfig.from_tune_config({**base, SEED_INDEX_KEY: 2})
    assert (first.seed, first.seed_index, third.seed, third.seed_index) == (10, 0, 12, 2)
    assert intermediate_cache_fields(first)["seed"] != intermediate_cache_fields(third)["seed"]  # phase 2 per seed


# ------------------------------------------------------------------------------------------------
# Intervals over examples: per-example statistics that reproduce each metric, and the bootstrap
# ------------------------------------------------------------------------------------------------

def _ratio(stats):
    return 100.0 * sum(v for v, _ in stats) / sum(w for _, w in stats)


def test_example_stats_reproduce_every_decomposable_metric():
    from xstilts.tasks import get_task
    from xstilts.tasks.base import MultipleChoiceExample, PairExample, SpanQAExample, TaggingExample
    from xstilts.tasks.modeling import example_stats, score

    xnli = get_task("xnli")
    pairs = [PairExample("a", "b", label) for label in ("entailment", "neutral", "contradiction", "neutral")]
    predicted = ["entailment", "contradiction", "contradiction", "entailment"]
    assert example_stats(xnli, predicted, pairs) == [(1.0, 1.0), (0.0, 1.0), (1.0, 1.0), (0.0, 1.0)]
    assert _ratio(example_stats(xnli, predicted, pairs)) == approx(score(xnli, predicted, pairs)["accuracy"]) == 50.0

    # PAN-X chunk F1: sentence 1 finds its PER and a spurious LOC; sentence 2 misses its ORG:
    # tp 1, fp 1, fn 1 -> F1 = 2 / 4 = 50, as seqeval says
    panx = get_task("panx")
    tagged = [TaggingExample(("Ann", "met", "Bo"), ("B-PER", "O", "O")),
              TaggingExample(("at", "Acme", "Inc"), ("O", "B-ORG", "I-ORG"))]
    guesses = [["B-PER", "O", "B-LOC"], ["O", "O", "O"]]
    stats = example_stats(panx, guesses, tagged)
    assert stats == [(2.0, 3.0), (0.0, 1.0)] and _ratio(stats) == approx(score(panx, guesses, tagged)["f1"]) == 50.0

    # CCG token accuracy: 2 of 3 and 0 of 1 tags right -> 50; a truncated prediction counts as wrong
    import dataclasses

    ccg = dataclasses.replace(get_task("ccg"), labels=("NP", "S/NP", "N", "PP"))  # its labels come from the data
    supertags = [TaggingExample(("a", "b", "c"), ("NP", "S/NP", "N")), TaggingExample(("d",), ("PP",))]
    stats = example_stats(ccg, [["NP", "S/NP"], ["N"]], supertags)
    assert stats == [(2.0, 3.0), (0.0, 1.0)] and _ratio(stats) == approx(score(ccg, [["NP", "S/NP"], ["N"]], supertags)["accuracy"])

    # QA F1 per question (SQuAD normalisation; MLQA's per language), unanswered = 0
    # ("the" is an article for SQuAD, not for MLQA's Spanish: F1 of [the red house] vs [red house] = 0.8)
    for name, language, first in (("xquad", "de", 1.0), ("mlqa", "es", 0.8)):
        task = get_task(name)
        questions = [SpanQAExample("q1", "?", "the red house", ("the red house",), (0,)),
                     SpanQAExample("q2", "?", "a blue car", ("blue car",), (2,)),
                     SpanQAExample("q3", "?", "x", ("x",), (0,))]
        answers = {"q1": "red house", "q2": "car"}
        stats = example_stats(task, answers, questions, language)
        assert [w for _, w in stats] == [1.0, 1.0, 1.0] and stats[2][0] == 0.0 and stats[0][0] == approx(first)
        assert _ratio(stats) == approx(score(task, answers, questions, language)["f1"])

    # multiple choice scores like classification, over choice slots
    copa = get_task("xcopa")
    chosen = [MultipleChoiceExample("c", ("x", "y"), 1), MultipleChoiceExample("c", ("x", "y"), 0)]
    assert _ratio(example_stats(copa, ["1", "1"], chosen)) == approx(score(copa, ["1", "1"], chosen)["accuracy"]) == 50.0


def test_example_interval_by_hand():
    from xstilts.analysis.uncertainty import example_interval

    # paired, two examples: treated right on one, baseline on none -> delta 50; the resampled deltas
    # are 0, 50, 100 with probabilities 1/4, 1/2, 1/4, so the 95 % interval is [0, 100]
    found = example_interval({"en": [[1, 1], [0, 1]]}, {"en": [[0, 1], [0, 1]]})
    assert (found.delta, found.low, found.high) == (approx(50.0), approx(0.0), approx(100.0)) and not found.resolved
    # every example right vs every example wrong: no spread, resolved
    sure = example_interval({"en": [[1, 1]] * 30, "de": [[1, 1]] * 20}, {"en": [[0, 1]] * 30, "de": [[0, 1]] * 20})
    assert (sure.delta, sure.low, sure.high) == (100.0, 100.0, 100.0) and sure.resolved
    # the mean over the languages both have (de only in one arm: left out); identical arms: zero width
    same = example_interval({"en": [[1, 1], [0, 1], [1, 1]], "de": [[1, 1]]}, {"en": [[1, 1], [0, 1], [1, 1]]})
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)
    assert example_interval({"de": [[1, 1]]}, {"en": [[1, 1]]}) is None
    # ratio metrics resample (numerator, denominator) pairs: F1 = 2tp / (2tp + fp + fn) summed
    f1 = example_interval({"en": [[2, 3], [0, 1]]}, {"en": [[0, 1], [0, 1]]})
    assert f1.delta == approx(50.0) and f1.low <= 0.0 and f1.high == approx(100 * 2 / 3)
