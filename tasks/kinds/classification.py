"""classification: one sequence (or sentence pair), one label. Features: `Features` with an int
label. Predictions: label strings. Metric: accuracy."""
from __future__ import annotations

from collections import Counter

from transformers import AutoModelForSequenceClassification

from xstilts.tasks.kinds import TaskKind, register
from xstilts.tasks.kinds.common import Features, argmax_predictions
from xstilts.tasks.metrics import accuracy


NLI_LABELS = {"entailment", "neutral", "contradiction"}


class Classification(TaskKind):
    name = "classification"
    head = AutoModelForSequenceClassification

    def task_type(self, task):
        return "NLI" if set(task.labels) == NLI_LABELS else "classification"

    def encode(self, task, examples, tokenizer, max_length, doc_stride, segments):
        label_ids = {label: i for i, label in enumerate(task.labels)}
        firsts = [e.text_a for e in examples]
        seconds = [e.text_b for e in examples]
        pair = seconds and seconds[0] is not None
        encoded = tokenizer(firsts, seconds if pair else None, truncation=True, max_length=max_length,
                            return_token_type_ids=segments)
        types = encoded["token_type_ids"] if segments else [None] * len(examples)
        return [Features(ids, label_ids[example.label], type_ids)
                for ids, example, type_ids in zip(encoded["input_ids"], examples, types)]

    def predict(self, task, model, features, pad_token_id, batch_size, device, **decoding):
        return argmax_predictions(task, model, features, pad_token_id, batch_size, device,
                                  lambda best, batch, row: self.label_of(task, int(best)))

    def label_of(self, task, index: int) -> str:
        """The prediction for the head's output `index`."""
        return task.labels[index]

    def as_prediction(self, task, label) -> str:
        """An example's label as a prediction is written (here: the label string itself)."""
        return label

    def score(self, task, predictions, examples, language):
        return {"accuracy": accuracy(predictions, [self.as_prediction(task, e.label) for e in examples])}

    def example_stats(self, task, predictions, examples, language):
        return [(float(p == self.as_prediction(task, e.label)), 1.0) for p, e in zip(predictions, examples)]

    def majority_baseline(self, task, train_examples, examples, language):
        top = Counter(e.label for e in train_examples).most_common(1)[0][0]
        return self.score(task, [self.as_prediction(task, top)] * len(examples), examples, language)


register(Classification())
