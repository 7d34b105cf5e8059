"""tagging: one sequence, a label id per sub-token; only one sub-token per word is scored (its
first, or the next one when the first is a bare "▁": `word_label_positions`). Predictions: one
tag list per example. Metric: `TaskSpec.tag_metric`: "seqeval" (chunk precision/recall/F1, as
XTREME scores UD-POS and PAN-X) or "accuracy" (token accuracy, as jiant scores CCG)."""
from __future__ import annotations

from collections import Counter

from transformers import AutoModelForTokenClassification

from xstilts.tasks.kinds import TaskKind, register
from xstilts.tasks.kinds.common import (IGNORE_INDEX, Features, argmax_predictions, bare_word_start_id,
                                        word_label_positions)
from xstilts.tasks.metrics import tagging_prf, token_accuracy, tagging_sentence_counts


class Tagging(TaskKind):
    name = "tagging"
    head = AutoModelForTokenClassification

    def encode(self, task, examples, tokenizer, max_length, doc_stride, segments):
        label_ids = {label: i for i, label in enumerate(task.labels)}
        encoded = tokenizer([list(e.tokens) for e in examples], is_split_into_words=True,
                            truncation=True, max_length=max_length, return_token_type_ids=segments)
        bare = bare_word_start_id(tokenizer)
        features = []
        for i, example in enumerate(examples):
            ids = encoded["input_ids"][i]
            labels = [IGNORE_INDEX] * len(ids)
            for word, position in word_label_positions(encoded.word_ids(i), ids, bare).items():
                labels[position] = label_ids[example.tags[word]]
            features.append(Features(ids, labels, encoded["token_type_ids"][i] if segments else None))
        return features

    def predict(self, task, model, features, pad_token_id, batch_size, device, **decoding):
        def words(best, batch, row):  # the tags of the scored sub-tokens: one per word
            return [task.labels[int(t)] for t in best[batch["labels"][row] != IGNORE_INDEX]]

        return argmax_predictions(task, model, features, pad_token_id, batch_size, device, words)

    @staticmethod
    def _padded(task, predictions, examples) -> tuple[list, list]:
        # Words beyond max_length were truncated away and get no prediction: score them as
        # "O"-like misses by padding with the first label, so truncation can only lower the score.
        gold = [list(e.tags) for e in examples]
        return [p + [task.labels[0]] * (len(g) - len(p)) for p, g in zip(predictions, gold)], gold

    def example_stats(self, task, predictions, examples, language):
        padded, gold = self._padded(task, predictions, examples)
        if task.tag_metric == "accuracy":  # correct tags / tags, per sentence
            return [(float(sum(p == g for p, g in zip(pred[:len(ref)], ref))), float(len(ref)))
                    for pred, ref in zip(padded, gold)]
        return [(2.0 * tp, 2.0 * tp + fp + fn) for tp, fp, fn in tagging_sentence_counts(padded, gold)]

    def score(self, task, predictions, examples, language):
        padded, gold = self._padded(task, predictions, examples)
        if task.tag_metric == "accuracy":
            return token_accuracy(padded, gold)
        if task.tag_metric == "seqeval":
            return tagging_prf(padded, gold)
        raise ValueError(f"task {task.name}: tag_metric {task.tag_metric!r} is neither 'seqeval' nor 'accuracy'")

    def majority_baseline(self, task, train_examples, examples, language):
        top = Counter(t for e in train_examples for t in e.tags).most_common(1)[0][0]
        return self.score(task, [[top] * len(e.tags) for e in examples], examples, language)


register(Tagging())
