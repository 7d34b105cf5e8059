"""Task kinds are types (xstilts.tasks.kinds): every registered task's kind is registered, an
unknown kind is a clear error, and a new kind is one registration away from the generic
encode/predict/score path of xstilts.tasks.modeling."""
from __future__ import annotations

import pytest

from xstilts.tasks import TASKS, TaskSpec
from xstilts.tasks.kinds import KINDS, TaskKind, kind_of, register
from xstilts.tasks.modeling import TRAINABLE_KINDS, encode, majority_baseline, predict, score


def _no_data(*args):
    raise AssertionError("not loaded")


def test_every_task_kind_is_registered():
    assert {task.kind for task in TASKS.values()} <= set(KINDS)
    assert set(TRAINABLE_KINDS) == {"classification", "tagging", "multiple_choice", "span_qa", "multimodal_classification"}
    assert not kind_of("retrieval").trainable and kind_of("retrieval").head is None


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task kind 'graph'; known kinds: classification"):
        kind_of(TaskSpec("t", "graph", ("en",), (), "accuracy", loader=_no_data))


def test_a_new_kind_is_one_registration(monkeypatch):
    class Echo(TaskKind):  # predicts each example's own text length parity
        name = "echo_test_kind"

        def encode(self, task, examples, tokenizer, max_length, doc_stride, segments):
            return [len(e) for e in examples]

        def predict(self, task, model, features, pad_token_id, batch_size, device, **decoding):
            return ["even" if f % 2 == 0 else "odd" for f in features]

        def score(self, task, predictions, examples, language):
            return {"accuracy": 100.0 * sum(p == g for p, g in zip(predictions, examples)) / len(examples)}

        def majority_baseline(self, task, train_examples, examples, language):
            return {"accuracy": 50.0}

    monkeypatch.setattr("xstilts.tasks.kinds.KINDS", dict(KINDS))
    register(Echo())
    task = TaskSpec("echo", "echo_test_kind", ("en",), ("even", "odd"), "accuracy", loader=_no_data)

    class Tokenizer:
        model_max_length = 512
        model_input_names = ("input_ids",)

    features = encode(task, ["ab", "abc"], Tokenizer())
    assert features == [2, 3]
    predictions = predict(task, None, features, 0)
    assert predictions == ["even", "odd"]
    assert score(task, predictions, ["even", "even"]) == {"accuracy": 50.0}
    assert majority_baseline(task, [], ["even"]) == {"accuracy": 50.0}
    with pytest.raises(ValueError, match="registered twice"):
        register(Echo())


def test_classification_dispatch_gives_the_hand_computed_results():
    """encode -> predict -> score -> majority_baseline for one small classification task, through
    the dispatchers, with a stub tokenizer and model so every value can be worked out by hand."""
    import torch

    from xstilts.tasks.base import PairExample
    from xstilts.tasks.modeling import Features, evaluate

    task = TaskSpec("c", "classification", ("en",), ("no", "yes"), "accuracy", loader=_no_data)
    examples = [PairExample("a b", None, "yes"), PairExample("c", None, "no"), PairExample("d e f", None, "no")]

    class Tokenizer:  # one id per word, no segment ids
        model_max_length = 512
        model_input_names = ("input_ids", "attention_mask")
        pad_token_id = 0

        def __call__(self, firsts, seconds, **kwargs):
            return {"input_ids": [[len(w) for w in text.split()] for text in firsts]}

    class Model(torch.nn.Module):  # predicts "yes" (label 1) exactly for sequences of 2+ tokens
        def forward(self, input_ids, attention_mask):
            long = (attention_mask.sum(-1) >= 2).float()
            return type("Output", (), {"logits": torch.stack([1 - long, long], -1)})()

    features = encode(task, examples, Tokenizer())
    assert features == [Features([1, 1], 1), Features([1], 0), Features([1, 1, 1], 0)]
    predictions = predict(task, Model(), features, 0, batch_size=2)
    assert predictions == ["yes", "no", "yes"]
    assert score(task, predictions, examples) == {"accuracy": pytest.approx(200 / 3)}
    assert evaluate(task, Model(), Tokenizer(), examples) == {"accuracy": pytest.approx(200 / 3)}
    # Two "no" to one "yes" in training: always "no" gets 2 of 3 right.
    assert majority_baseline(task, examples, examples) == {"accuracy": pytest.approx(200 / 3)}
