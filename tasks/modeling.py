"""How a task's examples become model inputs, which HF head it trains, and how it is scored.

One function per concern, switched on `TaskSpec.kind`; the trainables and `xstilts export`
(which re-scores an exported model) both call these, so a logged metric and a re-computed one
come from the same code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

from tasks.base import PairExample, TaggingExample, TaskSpec
from tasks.metrics import accuracy, tagging_prf

IGNORE_INDEX = -100  # the label of sub-tokens that are not scored (HF's loss ignores it)

_HEADS = {
    "classification": AutoModelForSequenceClassification,
    "tagging": AutoModelForTokenClassification,
}
TRAINABLE_KINDS = tuple(_HEADS)


def head_class(task: TaskSpec):
    try:
        return _HEADS[task.kind]
    except KeyError:
        raise ValueError(f"task {task.name}: kind {task.kind!r} has no training head yet") from None


def load_model_for_task(task: TaskSpec, model_path: str):
    """A fresh task head on the encoder at `model_path` (an HF hub name or a local folder).

    The encoder may be a pretrained MLM (phase 1) or a phase-2 encoder saved without its head;
    either way the head is new, and the label names are stored in the config so an exported
    model is self-describing.
    """
    config = AutoConfig.from_pretrained(
        model_path,
        num_labels=len(task.labels),
        id2label=dict(enumerate(task.labels)),
        label2id={label: i for i, label in enumerate(task.labels)},
    )
    return head_class(task).from_pretrained(model_path, config=config)


@dataclass
class Features:
    input_ids: list[int]
    labels: list[int] | int


def encode(task: TaskSpec, examples: list, tokenizer, max_length: int | None = None) -> list[Features]:
    """Tokenize without padding (batches are padded dynamically in `collate`)."""
    max_length = max_length or task.max_length
    label_ids = {label: i for i, label in enumerate(task.labels)}
    features = []
    if task.kind == "classification":
        firsts = [e.text_a for e in examples]
        seconds = [e.text_b for e in examples]
        pair = seconds and seconds[0] is not None
        encoded = tokenizer(firsts, seconds if pair else None, truncation=True, max_length=max_length)
        for ids, example in zip(encoded["input_ids"], examples):
            features.append(Features(ids, label_ids[example.label]))
    elif task.kind == "tagging":
        encoded = tokenizer([list(e.tokens) for e in examples], is_split_into_words=True,
                            truncation=True, max_length=max_length)
        for i, example in enumerate(examples):
            labels, previous = [], None
            for word in encoded.word_ids(i):
                # Only the first sub-token of each word carries the word's tag (XTREME convention).
                labels.append(IGNORE_INDEX if word is None or word == previous else label_ids[example.tags[word]])
                previous = word
            features.append(Features(encoded["input_ids"][i], labels))
    else:
        head_class(task)  # raises the clear "no head" error
    return features


def collate(batch: list[Features], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch (dynamic padding)."""
    width = max(len(f.input_ids) for f in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    token_labels = isinstance(batch[0].labels, list)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long) if token_labels else torch.empty(len(batch), dtype=torch.long)
    for row, f in enumerate(batch):
        n = len(f.input_ids)
        input_ids[row, :n] = torch.tensor(f.input_ids)
        attention_mask[row, :n] = 1
        if token_labels:
            labels[row, :n] = torch.tensor(f.labels)
        else:
            labels[row] = f.labels
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches_by_length(features: list[Features], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (sorted), so dynamic padding wastes little."""
    order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def predict(task: TaskSpec, model, features: list[Features], pad_token_id: int,
            batch_size: int = 64, device: str | torch.device = "cpu") -> list:
    """Predicted labels per example: a label string, or a tag list per word for tagging."""
    model.eval()
    predictions: list = [None] * len(features)
    for indices in batches_by_length(features, batch_size):
        batch = collate([features[i] for i in indices], pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits.float().cpu()
        best = logits.argmax(-1)
        for row, i in enumerate(indices):
            if task.kind == "classification":
                predictions[i] = task.labels[int(best[row])]
            else:
                scored = batch["labels"][row] != IGNORE_INDEX
                predictions[i] = [task.labels[int(t)] for t in best[row][scored]]
    return predictions


def score(task: TaskSpec, predictions: list, examples: list) -> dict[str, float]:
    """The task's metrics (0-100) from predictions; the selection metric is `task.metric`."""
    if task.kind == "classification":
        return {"accuracy": accuracy(predictions, [e.label for e in examples])}
    # Words beyond max_length were truncated away and get no prediction: score them as "O"-like
    # misses by padding with the first label, so truncation can only lower the score.
    gold = [list(e.tags) for e in examples]
    padded = [p + [task.labels[0]] * (len(g) - len(p)) for p, g in zip(predictions, gold)]
    return tagging_prf(padded, gold)


def evaluate(task: TaskSpec, model, tokenizer, examples: list, batch_size: int = 64,
             device: str | torch.device = "cpu", max_length: int | None = None) -> dict[str, float]:
    features = encode(task, examples, tokenizer, max_length)
    return score(task, predict(task, model, features, tokenizer.pad_token_id, batch_size, device), examples)


def majority_baseline(task: TaskSpec, train_examples: list, examples: list) -> dict[str, float]:
    """The score of always predicting the most frequent training label (chance, for reports)."""
    from collections import Counter

    if task.kind == "classification":
        top = Counter(e.label for e in train_examples).most_common(1)[0][0]
        return score(task, [top] * len(examples), examples)
    top = Counter(t for e in train_examples for t in e.tags).most_common(1)[0][0]
    return score(task, [[top] * len(e.tags) for e in examples], examples)
