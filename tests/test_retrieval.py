"""Sentence retrieval (Tatoeba, BUCC) with a tiny encoder's pooled hidden states, and the
retrieval branch of a trial (no phase 3) without Ray or an MLflow server."""
from __future__ import annotations

import math

import pytest
import torch

from tasks.base import DataOptions, RetrievalCorpus, TaskSpec

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from tasks.retrieval import (bucc_candidates, bucc_scores, default_layer, embed_sentences,  # noqa: E402
                             evaluate_corpus, evaluate_retrieval, optimal_threshold, resolve_layer, tatoeba_scores)

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
    assert distractor[2] < scores["threshold"] < 1.0 + 1e-6
    assert all(c[2] == pytest.approx(1.0, abs=1e-5) for c in candidates if c[0] != "s2")


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

    import trainables.trial as trial_module

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
