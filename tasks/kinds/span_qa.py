"""span_qa: extractive QA. Features: `QAFeatures`, one question + context window each (a long
context gives several windows, `doc_stride` tokens of overlap), with the answer's start/end token
(the CLS token when the answer is not wholly inside the window or the question is unanswerable).
Predictions: `{example id: answer string}`, decoded n-best over all windows of an example; scored
with the shared SQuAD EM/F1, or MLQA's per-language normalisation where the task asks for it
(`TaskSpec.answer_normalization`)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import torch
from transformers import AutoModelForQuestionAnswering

from xstilts.tasks.kinds import TaskKind, register
from xstilts.tasks.kinds.common import (MAX_ANSWER_LENGTH, N_BEST_SIZE, QAFeatures, check_positions,
                                        effective_doc_stride, forward_batches)
from xstilts.tasks.metrics import mlqa_em_f1, qa_question_scores, qa_tokenizer, squad_em_f1


class SpanQA(TaskKind):
    name = "span_qa"
    head = AutoModelForQuestionAnswering

    def task_type(self, task):
        return "extractive QA"

    def head_labels(self, task):
        return ("start", "end")  # the QA head's 2 outputs (num_labels must be 2)

    def encode(self, task, examples, tokenizer, max_length, doc_stride, segments):
        return _encode_span_qa(examples, tokenizer, max_length, doc_stride, segments)

    @torch.no_grad()
    def predict(self, task, model, features, pad_token_id, batch_size, device, *, n_best_size=N_BEST_SIZE,
                max_answer_length=MAX_ANSWER_LENGTH, allow_no_answer=False):
        check_positions(task, model, features)
        start_logits: list = [None] * len(features)
        end_logits: list = [None] * len(features)
        for indices, _, output in forward_batches(model, features, pad_token_id, batch_size, device):
            starts, ends = output.start_logits.float().cpu(), output.end_logits.float().cpu()
            for row, i in enumerate(indices):
                start_logits[i], end_logits[i] = starts[row], ends[row]
        return decode_answers(features, start_logits, end_logits, n_best_size, max_answer_length, allow_no_answer)

    def score(self, task, predictions, examples, language):
        questions = _qa_questions(predictions, examples)
        if task.answer_normalization == "mlqa":
            return mlqa_em_f1(questions, language)
        return squad_em_f1(questions)

    def example_stats(self, task, predictions, examples, language):  # the F1 of each question
        scores = qa_question_scores(_qa_questions(predictions, examples), qa_tokenizer(task.answer_normalization, language))
        return [(f1, 1.0) for _, f1 in scores]

    def majority_baseline(self, task, train_examples, examples, language):
        answers = Counter(e.answers[0] for e in train_examples if e.answers).most_common(1)
        top_answer = answers[0][0] if answers else ""
        return self.score(task, {e.id: top_answer for e in examples}, examples, language)


def _clip_questions(tokenizer, questions: list[str], limit: int) -> list[str]:
    """Questions cut to at most `limit` tokens (at a token's end), so every window keeps room for context."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    clipped = []
    for question, ids, offsets in zip(questions, encoded["input_ids"], encoded["offset_mapping"]):
        clipped.append(question[:offsets[limit - 1][1]] if len(ids) > limit else question)
    return clipped


def _answer_char_span(example) -> tuple[int, int] | None:
    """The first reference answer's (start, end) characters in the context, or None."""
    if not example.answers:
        return None
    answer = example.answers[0]
    start = example.answer_starts[0] if example.answer_starts else example.context.find(answer)
    if start < 0:
        return None
    return start, start + len(answer)


def _answer_positions(span: tuple[int, int] | None, offsets: list, cls_index: int) -> tuple[int, int]:
    context_tokens = [k for k, o in enumerate(offsets) if o is not None]
    if span is None or not context_tokens:
        return cls_index, cls_index
    start_char, end_char = span
    if offsets[context_tokens[0]][0] > start_char or offsets[context_tokens[-1]][1] < end_char:
        return cls_index, cls_index  # the answer is not wholly inside this window
    start = next(k for k in context_tokens if offsets[k][1] > start_char)
    end = max(k for k in context_tokens if offsets[k][0] < end_char)
    return start, max(start, end)


def _encode_span_qa(examples: list, tokenizer, max_length: int, doc_stride: int,
                    segments: bool = False) -> list[QAFeatures]:
    if not examples:
        return []
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"span_qa example ids must be unique (predictions are keyed by id); {duplicate!r} repeats")
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    question_limit = max_length // 2
    room = max_length - specials - question_limit  # context tokens per window, at least
    if room < 4:
        raise ValueError(f"max_length {max_length} is too short for extractive QA (question + context windows)")
    stride = min(effective_doc_stride(max_length, doc_stride), room - 2)
    # Leading whitespace in questions only wastes tokens (and breaks some tokenizers' truncation).
    questions = _clip_questions(tokenizer, [e.question.lstrip() for e in examples], question_limit)
    # The question is sequence 0 and never cut; the context (sequence 1) is split into windows.
    encoded = tokenizer(questions, [e.context for e in examples], truncation="only_second",
                        max_length=max_length, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, return_token_type_ids=segments)
    cls_id = tokenizer.cls_token_id
    spans = [_answer_char_span(e) for e in examples]
    features = []
    for k, input_ids in enumerate(encoded["input_ids"]):
        example_index = encoded["overflow_to_sample_mapping"][k]
        example = examples[example_index]
        sequence_ids = encoded.sequence_ids(k)
        offsets = [list(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][k], sequence_ids)]
        cls_index = input_ids.index(cls_id) if cls_id in input_ids else 0
        start, end = _answer_positions(spans[example_index], offsets, cls_index)
        features.append(QAFeatures(list(input_ids), start, end, example_index, example.id, offsets,
                                   example.context, cls_index,
                                   list(encoded["token_type_ids"][k]) if segments else None))
    return features


def decode_answers(features: list[QAFeatures], start_logits: list[torch.Tensor], end_logits: list[torch.Tensor],
                   n_best_size: int = N_BEST_SIZE, max_answer_length: int = MAX_ANSWER_LENGTH,
                   allow_no_answer: bool = False, null_score_threshold: float = 0.0) -> dict[str, str]:
    """The best answer string per example id, from every window's start/end logits.

    In each window the `n_best_size` best start and end tokens among the context tokens are
    paired (end not before start, at most `max_answer_length` tokens); a span scores start logit
    + end logit, and the best-scoring span over all windows of an example wins. Its text is the
    context between the start token's first and the end token's last character.

    SQuAD v1.1 (and XTREME's QA tasks) always answer, so by default the CLS "no answer" is never
    predicted. `allow_no_answer=True` is the SQuAD v2.0 rule: predict "" when the example's
    smallest CLS score (start + end logit at CLS, over its windows) beats the best span by more
    than `null_score_threshold`.
    """
    best: dict[str, tuple[float, str]] = {}
    null: dict[str, float] = {}
    for feature, starts, ends in zip(features, start_logits, end_logits):
        starts = starts[:len(feature.input_ids)].float()
        ends = ends[:len(feature.input_ids)].float()
        null_score = float(starts[feature.cls_index] + ends[feature.cls_index])
        null[feature.example_id] = min(null.get(feature.example_id, null_score), null_score)
        best.setdefault(feature.example_id, (float("-inf"), ""))
        context = torch.tensor([o is not None for o in feature.offsets], dtype=torch.bool)
        if not bool(context.any()):
            continue
        k = min(n_best_size, int(context.sum()))
        top_starts = starts.masked_fill(~context, float("-inf")).topk(k).indices.tolist()
        top_ends = ends.masked_fill(~context, float("-inf")).topk(k).indices.tolist()
        for i in top_starts:
            for j in top_ends:
                if j < i or j - i + 1 > max_answer_length:
                    continue
                score = float(starts[i] + ends[j])
                if score > best[feature.example_id][0]:
                    text = feature.context[feature.offsets[i][0]:feature.offsets[j][1]]
                    best[feature.example_id] = (score, text)
    answers = {}
    for example_id, (score, text) in best.items():
        if allow_no_answer and null[example_id] > score + null_score_threshold:
            text = ""
        answers[example_id] = text
    return answers


def _qa_questions(predictions, examples: list) -> list[tuple[tuple[str, ...], str | None]]:
    if not isinstance(predictions, Mapping):  # a list aligned with the examples
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        predictions = {e.id: p for e, p in zip(examples, predictions)}
    # An unanswerable question's reference is "" (SQuAD v2.0): only the empty prediction matches
    # it exactly. (The shared token F1 gives 0 when both sides are empty, as SQuAD v1.1 does.)
    return [(tuple(e.answers) or ("",), predictions.get(e.id)) for e in examples]


register(SpanQA())
