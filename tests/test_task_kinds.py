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
    assert set(TRAINABLE_KINDS) == {"classification", "tagging", "multiple_choice", "span_qa"}
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
