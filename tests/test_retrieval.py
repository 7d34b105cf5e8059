"""Sentence retrieval (Tatoeba, BUCC, LAReQA and Mewsli-X's mAP@20) with a tiny encoder's pooled
hidden states, and the retrieval branch of a trial (no phase 3) without Ray or an MLflow server."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from xstilts.tasks.base import DataOptions, RetrievalCorpus, TaskSpec

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from xstilts.tasks.retrieval import (MAP_METRIC, average_precision_at_k, bucc_candidates, bucc_scores,  # noqa: E402
                             default_layer, embed_sentences, evaluate_corpus, evaluate_retrieval, limit_corpus, map_scores,
                             optimal_threshold, resolve_layer, tatoeba_scores, top_k)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks" / "data"

pytestmark = pytest.mark.usefixtures("one_thread")  # one_thread, tokenizer_dir, tokenizer: tests/conftest.py
SENTENCES = [
    "the dog sees the cat",
    "Maria Silva visits the big garden in Lagos",
    "the old teacher reads the letter",
    "a small red boat",
    "the happy child paints the green house with the bright window",
]


@pytest.fixture(scope="session")
def encoder(tokenizer):
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id)
    return XLMRobertaModel(config).eval()


def test_layer_numbering():
    assert default_layer(12) == 8  # XTREME's --specific_layer 7 (mBERT)
    assert default_layer(24) == 14  # XTREME's --specific_layer 13 (XLM-R large, Tatoeba)
    assert default_layer(2) == 2
    assert resolve_layer(12) == 8 and resolve_layer(12, 0) == 0 and resolve_layer(12, -1) == 12
    assert resolve_layer(12, -13) == 0
    for bad in (13, -14):
        with pytest.raises(ValueError, match="does not exist"):
            resolve_layer(12, bad)


def _manual_embedding(model, tokenizer, sentence: str, layer: int) -> torch.Tensor:
    ids = torch.tensor([tokenizer(sentence)["input_ids"]])
    with torch.no_grad():
        states = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(states) == model.config.num_hidden_layers + 1  # index 0: the embeddings
    return states[layer][0].mean(0)


@pytest.mark.parametrize("layer", [0, 1, 2, None, -2])
def test_embeddings_mean_pool_the_requested_layer_over_non_pad_tokens(encoder, tokenizer, layer):
    pooled = embed_sentences(encoder, tokenizer, SENTENCES, layer=layer, batch_size=3)
    assert pooled.shape == (len(SENTENCES), 32)
    index = resolve_layer(2, layer)
    for row, sentence in enumerate(SENTENCES):  # batched with padding == alone without padding
        assert torch.allclose(pooled[row], _manual_embedding(encoder, tokenizer, sentence, index), atol=1e-5)


def test_layers_give_different_embeddings(encoder, tokenizer):
    first = embed_sentences(encoder, tokenizer, SENTENCES, layer=1)
    last = embed_sentences(encoder, tokenizer, SENTENCES, layer=2)
    assert not torch.allclose(first, last)


def _tatoeba_corpus(wrong_gold: int = 0) -> RetrievalCorpus:
    """English = the same sentences in reversed order; gold maps each to its copy."""
    n = len(SENTENCES)
    english = list(reversed(SENTENCES))
    gold = [(str(i), str(n - 1 - i)) for i in range(n)]
    for i in range(wrong_gold):
        gold[i] = (str(i), str((n - i) % n))  # a wrong English line
    return RetrievalCorpus(tuple(str(i) for i in range(n)), tuple(SENTENCES), tuple(str(i) for i in range(n)),
                           tuple(english), tuple(gold))


def test_tatoeba_identical_sentences_are_found(encoder, tokenizer):
    corpus = _tatoeba_corpus()
    tatoeba = TaskSpec("toy_tatoeba", "retrieval", ("xx",), (), "accuracy", loader=lambda *a: [corpus])
    assert evaluate_corpus(tatoeba, corpus, encoder, tokenizer) == {"accuracy": 100.0}
    wrong = _tatoeba_corpus(wrong_gold=1)
    assert evaluate_corpus(tatoeba, wrong, encoder, tokenizer) == {"accuracy": pytest.approx(80.0)}
    source = embed_sentences(encoder, tokenizer, corpus.source_sentences)
    target = embed_sentences(encoder, tokenizer, corpus.target_sentences)
    assert tatoeba_scores(corpus, source, target) == {"accuracy": 100.0}


def test_bucc_threshold_excludes_a_known_distractor():
    gold = [("de1", "en1"), ("de2", "en2")]
    candidates = [("de1", "en1", 0.9), ("de2", "en2", 0.8), ("de3", "en7", 0.5)]  # de3 has no translation
    assert optimal_threshold(candidates, gold) == pytest.approx(0.65)  # between 0.8 and 0.5, as XTREME
    assert bucc_scores(candidates, gold) == {"f1": 100.0, "precision": 100.0, "recall": 100.0,
                                             "threshold": pytest.approx(0.65)}
    # a threshold chosen elsewhere (dev) is applied as given (test)
    low = bucc_scores(candidates, gold, threshold=0.1)
    assert low["precision"] == pytest.approx(200 / 3) and low["recall"] == 100.0
    # a gold pair scored below a distractor: keeping it is still worth it (F1 6/7 > 4/5)
    candidates.append(("de4", "en4", 0.3))
    gold.append(("de4", "en4"))
    assert optimal_threshold(candidates, gold) == 0.3
    assert bucc_scores(candidates, gold)["f1"] == pytest.approx(100 * 6 / 7)


def test_bucc_threshold_edge_cases():
    # equal scores are kept or dropped together
    tied = [("a", "x", 0.7), ("b", "y", 0.7), ("c", "z", 0.2)]
    assert optimal_threshold(tied, [("a", "x")]) == pytest.approx(0.45)
    # nothing right: nothing predicted
    wrong = [("a", "x", 0.9)]
    threshold = optimal_threshold(wrong, [("a", "y")])
    assert threshold > 0.9 and bucc_scores(wrong, [("a", "y")])["f1"] == 0.0
    assert optimal_threshold([], [("a", "y")]) == math.inf


def test_bucc_mining_with_embeddings(encoder, tokenizer):
    english = ["the cat sleeps", *SENTENCES[:3], "the river is quiet"]
    source = [SENTENCES[2], SENTENCES[0], "Olga buys the green car", SENTENCES[1]]  # index 2: no translation
    corpus = RetrievalCorpus(("s0", "s1", "s2", "s3"), tuple(source), tuple(f"e{i}" for i in range(5)), tuple(english),
                             (("s0", "e3"), ("s1", "e1"), ("s3", "e2")))
    bucc = TaskSpec("toy_bucc", "retrieval", ("xx",), (), "f1", loader=lambda *a: [corpus])
    scores = evaluate_corpus(bucc, corpus, encoder, tokenizer)
    assert (scores["f1"], scores["precision"], scores["recall"]) == (100.0, 100.0, 100.0)
    candidates = bucc_candidates(corpus, embed_sentences(encoder, tokenizer, source), embed_sentences(encoder, tokenizer, english))
    distractor = next(c for c in candidates if c[0] == "s2")
    # XTREME's ratio margin (tasks/retrieval.py): an identical pair has cosine 1, so its score is
    # 1 / (mean of its neighbourhoods' cosines), above 1 (was: plain cosine 1.0).
    found = [c for c in candidates if c[0] != "s2"]
    assert distractor[2] < scores["threshold"] < min(c[2] for c in found)
    assert all(c[2] > 1.0 for c in found) and len(found) == 3


def test_evaluate_retrieval_over_languages(encoder, tokenizer):
    corpora = {"xx": _tatoeba_corpus(), "yy": _tatoeba_corpus(wrong_gold=2)}
    task = TaskSpec("toy_tatoeba", "retrieval", ("xx", "yy"), (), "accuracy",
                    loader=lambda split, language, options: [corpora[language]])
    results = evaluate_retrieval(task, encoder, tokenizer, DataOptions(), layer=1)
    assert results == {"xx": {"accuracy": 100.0}, "yy": {"accuracy": pytest.approx(60.0)}}
    broken = TaskSpec("toy_broken", "retrieval", ("xx",), (), "accuracy", loader=lambda *a: [])
    with pytest.raises(ValueError, match="one RetrievalCorpus"):
        evaluate_retrieval(broken, encoder, tokenizer)
    odd = TaskSpec("toy_odd", "retrieval", ("xx",), (), "map", loader=lambda *a: [corpora["xx"]])
    with pytest.raises(ValueError, match="neither"):
        evaluate_retrieval(odd, encoder, tokenizer)


def test_limit_corpus_keeps_the_first_queries_their_gold_and_fills_with_distractors(encoder, tokenizer):
    bucc = RetrievalCorpus(("s0", "s1", "s2", "s3"), ("a", "b", "c", "d"), ("e0", "e1", "e2", "e3", "e4"),
                           ("A", "B", "C", "D", "E"), (("s0", "e3"), ("s1", "e1"), ("s3", "e2")))
    assert limit_corpus(bucc, None) is bucc and limit_corpus(bucc, 4) is bucc
    capped = limit_corpus(bucc, 3)  # s2 has no translation; e3, e1 are gold, e0 the first distractor
    assert capped == RetrievalCorpus(("s0", "s1", "s2"), ("a", "b", "c"), ("e0", "e1", "e3"), ("A", "B", "D"),
                                     (("s0", "e3"), ("s1", "e1")))
    tatoeba = _tatoeba_corpus()  # 5 pairs, the English side reversed
    first_two = limit_corpus(tatoeba, 2)
    assert first_two.source_ids == ("0", "1") and first_two.target_ids == ("3", "4")
    assert first_two.gold == (("0", "4"), ("1", "3"))
    # more gold candidates than queries (LAReQA: an answer per language): all kept
    many = RetrievalCorpus(("q0", "q1"), ("x", "y"), ("a", "b", "c", "d"), ("A", "B", "C", "D"),
                           (("q0", "a"), ("q0", "c"), ("q0", "d"), ("q1", "b")))
    assert limit_corpus(many, 1).target_ids == ("a", "c", "d")
    # evaluate_retrieval applies DataOptions.max_examples (a study's max_eval_examples)
    task = TaskSpec("toy_tatoeba", "retrieval", ("xx",), (), "accuracy", loader=lambda *a: [_tatoeba_corpus(wrong_gold=3)])
    assert evaluate_retrieval(task, encoder, tokenizer, DataOptions(max_examples=3)) == {"xx": {"accuracy": 0.0}}
    assert evaluate_retrieval(task, encoder, tokenizer, DataOptions()) == {"xx": {"accuracy": pytest.approx(40.0)}}


def test_evaluate_retrieval_scores_the_languages_that_have_data(encoder, tokenizer):
    from xstilts.tasks import TaskDataError, get_task

    # The LAReQA fixture holds de and en only: those two are scored, the other nine skipped.
    options = DataOptions(str(FIXTURES))
    results = evaluate_retrieval(get_task("lareqa"), encoder, tokenizer, options)
    assert set(results) == {"de", "en"} and all(set(r) == {MAP_METRIC} for r in results.values())
    with pytest.raises(TaskDataError, match="no language has dev data"):
        evaluate_retrieval(get_task("bucc2018"), encoder, tokenizer, DataOptions(str(FIXTURES / "lareqa")))


# ---------------------------------------------------------------------------------------------
# mAP@20 (LAReQA, Mewsli-X), checked against hand computations
# ---------------------------------------------------------------------------------------------

def test_map_metric_name_is_mlflow_safe():
    import re

    assert MAP_METRIC == "map_at_20"
    assert re.fullmatch(r"[/\w.\- :]*", f"final/dev/de/{MAP_METRIC}")  # MLflow's rule for metric keys


def test_average_precision_at_k_by_hand():
    assert average_precision_at_k({0, 2}, [0, 1, 2, 3]) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision_at_k({1}, [0, 1]) == 0.5  # fewer than 20 candidates: all ranked
    assert average_precision_at_k({3}, [0, 1, 2]) == 0.0  # the relevant one never retrieved
    assert average_precision_at_k(set(), [0, 1]) == 0.0
    ranking = list(range(30))
    assert average_precision_at_k({19}, ranking) == pytest.approx(1 / 20)  # rank 20 counts ...
    assert average_precision_at_k({20}, ranking) == 0.0  # ... rank 21 does not
    assert average_precision_at_k({0, 20}, ranking) == 0.5  # divisor min(|relevant|, 20) = 2
    assert average_precision_at_k(set(range(25)), ranking) == 1.0  # divisor min(25, 20) = 20
    assert average_precision_at_k({0, 1}, [0, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)  # a repeat counts once
    assert average_precision_at_k({4}, ranking, k=5) == 0.2


def _unit(*angles_in_degrees: float) -> torch.Tensor:
    radians = torch.tensor(angles_in_degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1).float()


def test_top_k_ranks_by_cosine_and_keeps_pool_order_among_ties():
    query = torch.tensor([[1.0, 0.0]])
    targets = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.1], [5.0, 0.0]])  # 1, 2, 4 tie (cos 1)
    assert top_k(query, targets) == [[1, 2, 4, 3, 0]]  # fewer than 20: all of them
    assert top_k(query, targets, k=2) == [[1, 2]]  # a tie cut by k: the earlier ones
    # many candidates, small chunks: the same as a plain stable sort of the similarities
    torch.manual_seed(0)
    source, target = torch.randn(7, 4), torch.randn(50, 4)
    target[10] = target[3] * 2  # an exact tie
    similarity = torch.nn.functional.normalize(source, dim=-1) @ torch.nn.functional.normalize(target, dim=-1).T
    expected = [sorted(range(50), key=lambda j: (-float(row[j]), j))[:20] for row in similarity]
    assert top_k(source, target, budget=100) == expected
    with pytest.raises(ValueError, match="no candidates"):
        top_k(query, torch.zeros((0, 2)))


def test_map_beyond_rank_20_by_hand():
    angles = [float(j) for j in range(30)]  # candidate j is j degrees from the query: ranked in index order
    ids = tuple(f"c{j}" for j in range(30))
    corpus = RetrievalCorpus(("q1", "q2", "q3"), ("", "", ""), ids, ("",) * 30,
                             (("q1", "c0"), ("q1", "c20"), ("q2", "c19"), ("q3", "c25")))
    source = _unit(0.0, 0.0, 0.0)
    scores = map_scores(corpus, source, _unit(*angles))
    # q1: c0 at rank 1, c20 at rank 21 (not counted): 1/2; q2: rank 20: 1/20; q3: rank 26: 0
    assert scores == {MAP_METRIC: pytest.approx(100 * (0.5 + 1 / 20 + 0) / 3)}


def test_map_on_the_lareqa_fixture_by_hand():
    """The German questions of the fixture against the pool of both languages' answer sentences."""
    from xstilts.tasks import get_task

    (corpus,) = get_task("lareqa").load("dev", "de", DataOptions(str(FIXTURES)))
    assert corpus.target_ids == ("de_1_0", "de_1_1", "en_1_0", "en_1_1")  # the pool, in file order
    # questions lq-1_de, lq-2_de; lq-1 is answered by de_1_0 and en_1_0, lq-2 by de_1_1 and en_1_1
    questions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    candidates = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    # lq-1 ranks de_1_0 (cos 1), en_1_1 (0.71), then de_1_1 and en_1_0 tied at 0 in pool order:
    # relevant at ranks 1 and 4: AP = (1/1 + 2/4) / 2 = 0.75
    # lq-2 ranks de_1_1 (1), en_1_1 (0.71), de_1_0, en_1_0: relevant at ranks 1 and 2: AP = 1
    assert map_scores(corpus, questions, candidates) == {MAP_METRIC: pytest.approx(100 * (0.75 + 1.0) / 2)}


def test_map_on_the_mewsli_x_fixture_by_hand():
    from xstilts.tasks import get_task

    (corpus,) = get_task("mewsli_x").load("dev", "en", DataOptions(str(FIXTURES)))
    assert corpus.target_ids == ("Q100", "Q200", "Q300") and corpus.gold == (("en-1", "Q100"), ("en-2", "Q200"))
    mentions = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    entities = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    # en-1 ranks Q200, Q300, Q100 (gold, rank 3): 1/3; en-2 ranks Q200 (gold) first: 1
    assert map_scores(corpus, mentions, entities) == {MAP_METRIC: pytest.approx(100 * (1 / 3 + 1) / 2)}
    # a tie with the gold entity: the one earlier in the candidate file ranks first
    tied = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # Q100 and Q200 identical
    assert map_scores(corpus, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), tied) == {MAP_METRIC: pytest.approx(100 * (1 + 1 / 2) / 2)}


def test_map_end_to_end_with_the_encoder_matches_a_plain_ranking(encoder, tokenizer):
    """evaluate_retrieval on the fixtures == AP@20 computed here from the same embeddings."""
    from xstilts.tasks import get_task

    options = DataOptions(str(FIXTURES))
    for name, language in (("lareqa", "de"), ("lareqa", "en"), ("mewsli_x", "en"), ("mewsli_x", "de")):
        task = get_task(name)
        (corpus,) = task.load("dev", language, options)
        results = evaluate_retrieval(task, encoder, tokenizer, options, languages=(language,), layer=1)
        queries = embed_sentences(encoder, tokenizer, corpus.source_sentences, layer=1)
        pool = embed_sentences(encoder, tokenizer, corpus.target_sentences, layer=1)
        similarity = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(pool, dim=-1).T
        aps = []
        for row, query in zip(similarity, corpus.source_ids):
            ranked = sorted(range(len(pool)), key=lambda j: (-float(row[j]), j))[:20]
            relevant = [corpus.target_ids.index(t) for s, t in corpus.gold if s == query]
            hits, total = 0, 0.0
            for rank, j in enumerate(ranked, start=1):
                if j in relevant:
                    hits += 1
                    total += hits / rank
            aps.append(total / min(len(relevant), 20))
        assert results == {language: {MAP_METRIC: pytest.approx(100 * sum(aps) / len(aps))}}, (name, language)


# ---------------------------------------------------------------------------------------------
# The trial's retrieval branch: phase 2 (here `none`: the pretrained model), then no phase 3
# ---------------------------------------------------------------------------------------------

class FakeRun:
    instances: list["FakeRun"] = []

    def __init__(self):
        self.run_id, self.params, self.metrics, self.tags, self.status = "run-1", {}, {}, {}, None
        self.finished_metrics = None  # a fresh trial, not one finished before a driver crash
        FakeRun.instances.append(self)

    @classmethod
    def open(cls, *args, **kwargs):
        return cls()

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, metrics, step=0):
        self.metrics.update({k: (v, step) for k, v in metrics.items()})

    def set_tags(self, tags):
        self.tags.update(tags)

    def finish(self, status="FINISHED"):
        self.status = status


def test_retrieval_trial_evaluates_the_encoder_and_reports_to_tune(monkeypatch, tmp_path, tokenizer_dir):
    import ray.tune

    import xstilts.trainables.trial as trial_module

    corpora = {"xx": _tatoeba_corpus(), "yy": _tatoeba_corpus(wrong_gold=1)}
    task = TaskSpec("toy_tatoeba", "retrieval", ("xx", "yy"), (), "accuracy",
                    loader=lambda split, language, options: [corpora[language]], max_length=32)
    reports = []
    monkeypatch.setattr(trial_module, "get_task", lambda name: task)
    monkeypatch.setattr(trial_module, "TrialRun", FakeRun)
    monkeypatch.setattr(ray.tune, "get_context", lambda: type("Context", (), {"get_trial_id": lambda self: "t1"})())
    monkeypatch.setattr(ray.tune, "report", lambda metrics, **kwargs: reports.append(metrics))

    def no_phase(*args, **kwargs):
        raise AssertionError("a retrieval target trains nothing")

    monkeypatch.setattr(trial_module, "_fit", no_phase)
    config = {
        "study_name": "s", "target_task": "toy_tatoeba", "intermediate_task": "none", "intermediate_lr": 0.0,
        "target_lr": 1e-3, "model_path": tokenizer_dir, "seed": 0, "storage_path": str(tmp_path),
        "phase_cache_dir": str(tmp_path / "cache"), "mlflow_tracking_uri": "unused", "mlflow_experiment_id": "0",
        "mlflow_parent_run_id": "p", "training": {"target_epochs": 3}, "resources": {}, "retrieval_layer": -1,
    }
    FakeRun.instances.clear()
    trial_module.run_trial(config)
    run = FakeRun.instances[-1]
    assert run.status == "FINISHED"
    assert run.tags["xstilts.checkpoint"] == tokenizer_dir  # the encoder folder (here: the pretrained model)
    assert run.params["retrieval_layer"] == 2  # -1 resolved on the 2-layer model
    logged = {k: v for k, (v, _) in run.metrics.items()}
    assert logged["final/dev/xx/accuracy"] == 100.0 and logged["final/dev/yy/accuracy"] == pytest.approx(80.0)
    assert logged["final/en_dev_score"] == pytest.approx(90.0) == logged["final/all_languages_mean"]
    assert logged["final/zero_shot_mean"] == pytest.approx(90.0)
    assert "mean over" in run.tags["xstilts.selection_source"]
    assert len(reports) == 1
    report = reports[0]
    assert report["en_dev_score"] == pytest.approx(90.0) and report["target_epoch"] == 3
    assert report["final/en_dev_score"] == pytest.approx(90.0) and report["final/dev/xx/accuracy"] == 100.0


def test_retrieval_trial_takes_its_own_evaluation_cap(monkeypatch, tmp_path, tokenizer_dir):
    """training.max_eval_examples_by_task over max_eval_examples (BUCC needs more queries than a
    study's uniform cap to hold more than a couple of gold pairs)."""
    import ray.tune

    import xstilts.trainables.trial as trial_module

    caps = []

    def load(split, language, options):
        caps.append(options.max_examples)
        return [_tatoeba_corpus()]

    task = TaskSpec("toy_tatoeba", "retrieval", ("xx", "yy"), (), "accuracy", loader=load, max_length=32)
    monkeypatch.setattr(trial_module, "get_task", lambda name: task)
    monkeypatch.setattr(trial_module, "TrialRun", FakeRun)
    monkeypatch.setattr(ray.tune, "get_context", lambda: type("Context", (), {"get_trial_id": lambda self: "t1"})())
    monkeypatch.setattr(ray.tune, "report", lambda metrics, **kwargs: None)
    config = {
        "study_name": "s", "target_task": "toy_tatoeba", "intermediate_task": "none", "intermediate_lr": 0.0,
        "target_lr": 1e-3, "model_path": tokenizer_dir, "seed": 0, "storage_path": str(tmp_path),
        "phase_cache_dir": str(tmp_path / "cache"), "mlflow_tracking_uri": "unused", "mlflow_experiment_id": "0",
        "mlflow_parent_run_id": "p", "resources": {}, "retrieval_layer": -1,
        "training": {"target_epochs": 3, "max_eval_examples": 2, "max_eval_examples_by_task": {"toy_tatoeba": 4, "xnli": 1}},
    }
    FakeRun.instances.clear()
    trial_module.run_trial(config)
    assert caps == [4, 4]  # each language loaded with the task's own cap, not the study-wide 2
    logged = {k: v for k, (v, _) in FakeRun.instances[-1].metrics.items()}
    assert logged["final/dev/xx/accuracy"] == 100.0  # 4 queries of the 5 pairs, each found
    config["training"] = {"target_epochs": 3, "max_eval_examples": 2}
    caps.clear()
    trial_module.run_trial(config)
    assert caps == [2, 2]


def test_lareqa_trial_logs_map_at_20(monkeypatch, tmp_path, tokenizer_dir):
    """The trial's retrieval branch with a map_at_20 target on the fixtures (restricted to the two
    languages the fixture holds: the branch averages over every language of the task)."""
    import ray.tune

    import xstilts.trainables.trial as trial_module
    from xstilts.tasks import get_task

    task = replace(get_task("lareqa"), languages=("de", "en"))
    reports = []
    monkeypatch.setattr(trial_module, "get_task", lambda name: task)
    monkeypatch.setattr(trial_module, "TrialRun", FakeRun)
    monkeypatch.setattr(ray.tune, "get_context", lambda: type("Context", (), {"get_trial_id": lambda self: "t2"})())
    monkeypatch.setattr(ray.tune, "report", lambda metrics, **kwargs: reports.append(metrics))
    config = {
        "study_name": "s", "target_task": "lareqa", "intermediate_task": "none", "intermediate_lr": 0.0,
        "target_lr": 1e-3, "model_path": tokenizer_dir, "seed": 0, "storage_path": str(tmp_path),
        "phase_cache_dir": str(tmp_path / "cache"), "mlflow_tracking_uri": "unused", "mlflow_experiment_id": "0",
        "mlflow_parent_run_id": "p", "training": {"target_epochs": 1}, "resources": {}, "data_dir": str(FIXTURES),
    }
    FakeRun.instances.clear()
    trial_module.run_trial(config)
    logged = {k: v for k, (v, _) in FakeRun.instances[-1].metrics.items()}
    de, en = logged["final/dev/de/map_at_20"], logged["final/dev/en/map_at_20"]
    assert 0.0 < de <= 100.0 and 0.0 < en <= 100.0
    assert logged["final/all_languages_mean"] == pytest.approx((de + en) / 2) == reports[0]["en_dev_score"]
    assert logged["final/zero_shot_mean"] == pytest.approx(de)
