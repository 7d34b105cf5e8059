"""How a task's examples become model inputs, which HF head it trains, and how it is scored.

Every trainable kind goes through the same generic path, which is all the train loop knows:

    features = encode(task, examples, tokenizer, max_length)
    for indices in batches_by_length(features, batch_size):
        loss = model(**collate([features[i] for i in indices], pad_token_id)).loss

`collate` returns exactly the keyword arguments of the HF head's forward (nothing else), and
`predict` + `score` (or `evaluate`, both at once) turn a model into the task's metrics. The
trainables and `xstilts export` (which re-scores an exported model) both call these, so a logged
metric and a re-computed one come from the same code.

What differs by kind lives with the kind: `xstilts.tasks.kinds` (classification, tagging,
multiple_choice, span_qa, retrieval), each one module owning its head, encoding, prediction,
scoring and chance baseline; the functions here dispatch to `kind_of(task)` and never switch on
the kind's name. What every kind shares (features, padding, batching, sequence limits) is
`xstilts.tasks.kinds.common`, re-exported here.

Any HF encoder (XLM-R, BERT-architecture models such as multilingual-e5 or mBERT, ...): heads
come from the `AutoModelFor...` classes and the encoder is reached through `base_model`, never a
class-specific attribute (`roberta`, `bert`). Segment ids (`token_type_ids`) are kept exactly when
the model's own tokenizer produces them (see `wants_segment_ids`); sequences are cut to what the
position embeddings can hold (`usable_length`); `freeze_embeddings` freezes the word embeddings.
"""
from __future__ import annotations

import torch
from transformers import AutoConfig

from xstilts.tasks.base import TaskSpec
from xstilts.tasks.kinds import kind_of, trainable_kinds
from xstilts.tasks.kinds.common import (DOC_STRIDE, IGNORE_INDEX, MAX_ANSWER_LENGTH, N_BEST_SIZE,  # noqa: F401
                                        AnyFeatures, Features, MultipleChoiceFeatures, QAFeatures, bare_word_start_id,
                                        batches_by_length, choice_label, collate, effective_doc_stride,
                                        feature_length, freeze_embeddings, max_positions, pad_sequences,
                                        usable_length, wants_segment_ids, word_label_positions)
from xstilts.tasks.kinds.span_qa import decode_answers  # noqa: F401

# The re-exported names are listed here so callers keep importing them from this module (and
# pyflakes sees them used).
__all__ = [
    "DOC_STRIDE", "IGNORE_INDEX", "MAX_ANSWER_LENGTH", "N_BEST_SIZE", "TRAINABLE_KINDS",
    "AnyFeatures", "Features", "MultipleChoiceFeatures", "QAFeatures",
    "bare_word_start_id", "batches_by_length", "choice_label", "collate", "decode_answers",
    "effective_doc_stride", "encode", "evaluate", "feature_length", "freeze_embeddings", "head_class",
    "load_model_for_task", "majority_baseline", "max_positions", "pad_sequences", "predict", "score",
    "usable_length", "wants_segment_ids", "word_label_positions",
]

TRAINABLE_KINDS = trainable_kinds()


def head_class(task: TaskSpec):
    """The `AutoModelFor...` class of the task's head; a clear error for kinds that train none."""
    kind = kind_of(task)
    if kind.head is None:
        raise kind.no_head(task)
    return kind.head


def load_model_for_task(task: TaskSpec, model_path: str):
    """A fresh task head on the encoder at `model_path` (an HF hub name or a local folder).

    The encoder may be a pretrained MLM (phase 1) or a phase-2 encoder saved without its head;
    either way the head is new, and the label names are stored in the config so an exported
    model is self-describing. A QA head always has two outputs (start, end); a multiple-choice
    head scores each choice with one logit, and its id2label names the choice slots.
    """
    cls = head_class(task)
    labels = kind_of(task).head_labels(task)
    if labels:
        config = AutoConfig.from_pretrained(
            model_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    else:  # a multiple-choice task that names no choice slots: the head does not use num_labels
        config = AutoConfig.from_pretrained(model_path)
    # AutoModelFor...: the config's model_type picks the class (XLMRobertaFor..., BertFor..., ...).
    # A folder holding a bare encoder (e.g. multilingual-e5's BertModel, a phase-2 encoder) loads
    # into the head class by its base_model_prefix; the head (and BERT's pooler, when the folder
    # has none) starts fresh.
    return cls.from_pretrained(model_path, config=config)


def encode(task: TaskSpec, examples: list, tokenizer, max_length: int | None = None,
           doc_stride: int = DOC_STRIDE) -> list[AnyFeatures]:
    """Tokenize without padding (batches are padded dynamically in `collate`).

    `doc_stride` is only used by span_qa (see `effective_doc_stride`); a span_qa example gives
    one `QAFeatures` per window, so there are usually more features than examples. Sequences
    are at most `usable_length(tokenizer, max_length)` tokens; segment ids are kept only for
    tokenizers that produce them (`wants_segment_ids`).
    """
    max_length = usable_length(tokenizer, max_length or task.max_length)
    return kind_of(task).encode(task, examples, tokenizer, max_length, doc_stride, wants_segment_ids(tokenizer))


def predict(task: TaskSpec, model, features: list[AnyFeatures], pad_token_id: int,
            batch_size: int = 64, device: str | torch.device = "cpu", *, n_best_size: int = N_BEST_SIZE,
            max_answer_length: int = MAX_ANSWER_LENGTH, allow_no_answer: bool = False):
    """Predictions: a list with one per example (a label string; a tag list per word for tagging;
    a choice label for multiple choice), or for span_qa a dict {example id: answer string}
    (see `decode_answers`, which the QA-only keyword arguments go to)."""
    return kind_of(task).predict(task, model, features, pad_token_id, batch_size, device, n_best_size=n_best_size,
                                 max_answer_length=max_answer_length, allow_no_answer=allow_no_answer)


def score(task: TaskSpec, predictions, examples: list, language: str = "en") -> dict[str, float]:
    """The task's metrics (0-100) from predictions; the selection metric is `task.metric`.

    `language` matters only for QA tasks with MLQA's answer normalisation
    (`TaskSpec.answer_normalization`); every other QA task uses SQuAD's (English) normalisation
    for every language, as the official XQuAD/TyDiQA scorers do. A span_qa example missing from
    the predictions scores 0.
    """
    return kind_of(task).score(task, predictions, examples, language)


def example_stats(task: TaskSpec, predictions, examples: list, language: str = "en") -> list[tuple[float, float]] | None:
    """Per example (numerator, denominator) of the selection metric (100 x sums' ratio = `score`'s
    value), for intervals over examples; None where the metric does not decompose."""
    return kind_of(task).example_stats(task, predictions, examples, language)


def evaluate(task: TaskSpec, model, tokenizer, examples: list, batch_size: int = 64,
             device: str | torch.device = "cpu", max_length: int | None = None, *,
             language: str = "en", doc_stride: int = DOC_STRIDE, features: list | None = None) -> dict[str, float]:
    """`score(predict(encode(...)))`; `language` as in `score`, `doc_stride` as in `encode`.

    `features`: the already encoded `examples` (e.g. read back from the feature cache, encoded
    with the same max_length and doc_stride); None: they are encoded here.
    """
    predictions = _predictions(task, model, tokenizer, examples, batch_size, device, max_length, doc_stride, features)
    return score(task, predictions, examples, language)


def evaluate_with_stats(task: TaskSpec, model, tokenizer, examples: list, batch_size: int = 64,
                        device: str | torch.device = "cpu", max_length: int | None = None, *, language: str = "en",
                        doc_stride: int = DOC_STRIDE, features: list | None = None):
    """(`evaluate`'s scores, `example_stats` of the same predictions): a final evaluation's; the
    per-epoch dev evaluation needs only `evaluate`."""
    predictions = _predictions(task, model, tokenizer, examples, batch_size, device, max_length, doc_stride, features)
    return score(task, predictions, examples, language), example_stats(task, predictions, examples, language)


def _predictions(task, model, tokenizer, examples, batch_size, device, max_length, doc_stride, features):
    if features is None:
        features = encode(task, examples, tokenizer, max_length, doc_stride)
    return predict(task, model, features, tokenizer.pad_token_id, batch_size, device)


def majority_baseline(task: TaskSpec, train_examples: list, examples: list, language: str = "en") -> dict[str, float]:
    """The score of always predicting the most frequent training label (chance, for reports).

    Multiple choice: the most frequent right choice slot. Extractive QA: the most frequent
    training answer string, given to every question.
    """
    return kind_of(task).majority_baseline(task, train_examples, examples, language)
