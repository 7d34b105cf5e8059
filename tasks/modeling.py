"""How a task's examples become model inputs, which HF head it trains, and how it is scored.

One function per concern, switched on `TaskSpec.kind`; the trainables and `xstilts export`
(which re-scores an exported model) both call these, so a logged metric and a re-computed one
come from the same code.

Every trainable kind goes through the same generic path, which is all the train loop knows:

    features = encode(task, examples, tokenizer, max_length)
    for indices in batches_by_length(features, batch_size):
        loss = model(**collate([features[i] for i in indices], pad_token_id)).loss

`collate` returns exactly the keyword arguments of the HF head's forward (nothing else), and
`predict` + `score` (or `evaluate`, both at once) turn a model into the task's metrics.

Kinds and their conventions:
  classification   `Features`: one sequence, one label id. Predictions: label strings.
  tagging          `Features`: one sequence, a label id per sub-token (only the first sub-token
                   of a word is scored; the next one when the first is a bare "▁", see
                   `word_label_positions`). Predictions: one tag list per example.
  multiple_choice  `MultipleChoiceFeatures`: one (context [+ question], choice) sequence per
                   choice; collated to [batch, n_choices, length]. `TaskSpec.labels[i]` names
                   choice slot i ("0", "1", ... for XCOPA; "A".."E" would do for CommonsenseQA);
                   with `labels=()` the slot index as a string is the name. Predictions and gold
                   labels are these names, scored with `accuracy`.
  span_qa          `QAFeatures`: one question + context window per feature (a long context gives
                   several windows, `doc_stride` tokens of overlap), with the answer's start/end
                   token (the CLS token when the answer is not wholly inside the window or the
                   question is unanswerable). Predictions: `{example id: answer string}`, decoded
                   n-best over all windows of an example; scored with the shared SQuAD EM/F1
                   (MLQA: the answer language's normalisation).
  retrieval        no head and no training: see `tasks/retrieval.py`.

Any HF encoder (XLM-R, BERT-architecture models such as multilingual-e5 or mBERT, ...): heads
come from the `AutoModelFor...` classes and the encoder is reached through `base_model`, never a
class-specific attribute (`roberta`, `bert`). Segment ids (`token_type_ids`) are kept exactly when
the model's own tokenizer produces them (see `_wants_segment_ids`); sequences are cut to what the
position embeddings can hold (`usable_length`); `freeze_embeddings` freezes the word embeddings.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from transformers import (AutoConfig, AutoModelForMultipleChoice, AutoModelForQuestionAnswering,
                          AutoModelForSequenceClassification, AutoModelForTokenClassification)

from xstilts.tasks.base import TaskSpec
from xstilts.tasks.metrics import accuracy, mlqa_em_f1, squad_em_f1, tagging_prf

IGNORE_INDEX = -100  # the label of sub-tokens that are not scored (HF's loss ignores it)

# Extractive QA defaults (HF run_qa.py / SQuAD practice).
DOC_STRIDE = 128  # tokens of overlap between consecutive windows of a long context, at max_length 384
MAX_ANSWER_LENGTH = 30  # longest answer (in tokens) the decoder considers
N_BEST_SIZE = 20  # start and end candidates per window
MLQA_TASK = "mlqa"  # the task name whose score uses MLQA's per-language answer normalisation

_HEADS = {
    "classification": AutoModelForSequenceClassification,
    "tagging": AutoModelForTokenClassification,
    "multiple_choice": AutoModelForMultipleChoice,
    "span_qa": AutoModelForQuestionAnswering,
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
    model is self-describing. A QA head always has two outputs (start, end); a multiple-choice
    head scores each choice with one logit, and its id2label names the choice slots.
    """
    cls = head_class(task)
    if task.kind == "span_qa":
        labels: tuple[str, ...] = ("start", "end")  # the QA head's 2 outputs (num_labels must be 2)
    else:
        labels = task.labels
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


def freeze_embeddings(model) -> int:
    """Freeze the word-embedding matrix (`get_input_embeddings()`); returns its parameter count.

    With the 250k-token XLM-R vocabulary this matrix is most of a small model (250,037 x 384 =
    96M of multilingual-e5-small's 118M parameters): its gradient, AdamW update and optimizer
    state dominate a CPU step, while a few thousand fine-tuning steps move it very little (and
    only for the tokens seen, i.e. mostly English ones, which is no help for zero-shot transfer).
    Position and token-type embeddings, the embedding LayerNorm and everything above stay
    trainable. An LM head tied to the word embeddings (MLM) shares the tensor and is frozen with
    it. Call it before building the optimizer and before wrapping the model for DDP. Works on a
    DDP-wrapped model or any module holding an HF model (e.g. the multi-task model).
    """
    module = getattr(model, "module", model)  # DistributedDataParallel
    holder = module if hasattr(module, "get_input_embeddings") else next(
        (m for m in module.modules() if hasattr(m, "get_input_embeddings")), None)
    embeddings = holder.get_input_embeddings() if holder is not None else None
    if embeddings is None or not isinstance(getattr(embeddings, "weight", None), torch.nn.Parameter):
        raise ValueError(f"{type(module).__name__} has no input word-embedding matrix to freeze")
    embeddings.weight.requires_grad_(False)
    return embeddings.weight.numel()


def max_positions(config) -> int | None:
    """The longest sequence the model's position embeddings hold (None: not bounded by them).

    BERT-type models number positions from 0, so `max_position_embeddings` tokens fit;
    RoBERTa/XLM-R number them from padding_idx + 1 (their 514-row table holds 512 tokens).
    """
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return None  # relative/rotary positions: no table to overrun
    if getattr(config, "model_type", "") in _PADDING_OFFSET_POSITIONS:
        return positions - (config.pad_token_id or 0) - 1
    return positions


# Model types whose position ids start after the padding index (HF's RobertaEmbeddings family).
_PADDING_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "xmod",
                                       "roberta-prelayernorm", "data2vec-text"})


# ---------------------------------------------------------------------------------------------
# Features: what `encode` produces and `collate` batches.
# ---------------------------------------------------------------------------------------------

@dataclass
class Features:
    """Classification (`labels` an int) and tagging (`labels` one id per token).

    `token_type_ids`: the tokenizer's segment ids, only for tokenizers that produce them (see
    `_wants_segment_ids`); None otherwise (the model then uses its default, all zeros).
    """

    input_ids: list[int]
    labels: list[int] | int
    token_type_ids: list[int] | None = None


@dataclass
class MultipleChoiceFeatures:
    """One example of a multiple-choice task: one token sequence per choice, the right choice's index."""

    input_ids: list[list[int]]
    labels: int
    token_type_ids: list[list[int]] | None = None  # per choice, as in `Features`


@dataclass
class QAFeatures:
    """One window of one extractive-QA example.

    `offsets[k]` is the [start, end) character span in `context` of token k, or None for tokens
    that are not context (question, special tokens): only context tokens can start or end an
    answer. (Lists, not tuples, and plain strings: the feature cache stores them as JSON.) `start_position`/`end_position` are the training targets (both `cls_index` when the
    answer is not wholly inside this window). `example_index`/`example_id` lead back to the
    example, so the answers of all its windows can be compared when decoding; `context` is the
    example's context string itself (shared, not copied).
    """

    input_ids: list[int]
    start_position: int
    end_position: int
    example_index: int
    example_id: str
    offsets: list[list[int] | None]
    context: str
    cls_index: int = 0
    token_type_ids: list[int] | None = None  # as in `Features`


AnyFeatures = Features | MultipleChoiceFeatures | QAFeatures


def feature_length(feature: AnyFeatures) -> int:
    """Tokens in the feature's longest sequence (what padding a batch to it costs)."""
    if isinstance(feature, MultipleChoiceFeatures):
        return max(len(ids) for ids in feature.input_ids)
    return len(feature.input_ids)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------

def effective_doc_stride(max_length: int, doc_stride: int = DOC_STRIDE) -> int:
    """The window overlap actually used: `doc_stride`, but never more than a third of `max_length`.

    The default 128 at max_length 384 is HF run_qa.py's (there the tokenizer's `stride`, i.e.
    the overlap between consecutive windows; note that the legacy SQuAD processors XTREME used
    call the step between window starts `doc_stride`). For short windows (the tiny models' 64)
    128 would be longer than the window itself, so it is scaled down to max_length // 3.
    """
    return max(0, min(doc_stride, max_length // 3))


def _wants_segment_ids(tokenizer) -> bool:
    """Whether features keep segment ids (`token_type_ids`): exactly when the tokenizer makes them.

    A model must see the segment ids it was pretrained with, and its own tokenizer is what
    produced those. BERT's WordPiece tokenizers (mBERT) return 0 for the first sentence and 1
    for the second: kept and passed on. The XLM-R tokenizer returns none: XLM-R itself has a
    single segment (type_vocab_size 1), and BERT-architecture models trained with that
    tokenizer (multilingual-e5, Multilingual-MiniLM; type_vocab_size 2) only ever saw segment 0,
    which is what their forward fills in when token_type_ids are left out. Making up 1s for the
    second sentence of a pair would feed such a model a segment embedding it did not learn to
    use, so nothing is produced here, and zeros never need to be written out either.
    """
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


def usable_length(tokenizer, max_length: int) -> int:
    """`max_length`, capped at the tokenizer's `model_max_length` (the model's position limit,
    512 for XLM-R, mBERT and multilingual-e5) when the tokenizer declares one."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:  # unset: transformers' VERY_LARGE_INTEGER
        return min(max_length, limit)
    return max_length


def encode(task: TaskSpec, examples: list, tokenizer, max_length: int | None = None,
           doc_stride: int = DOC_STRIDE) -> list[AnyFeatures]:
    """Tokenize without padding (batches are padded dynamically in `collate`).

    `doc_stride` is only used by span_qa (see `effective_doc_stride`); a span_qa example gives
    one `QAFeatures` per window, so there are usually more features than examples. Sequences
    are at most `usable_length(tokenizer, max_length)` tokens; segment ids are kept only for
    tokenizers that produce them (`_wants_segment_ids`).
    """
    max_length = usable_length(tokenizer, max_length or task.max_length)
    segments = _wants_segment_ids(tokenizer)
    if task.kind == "multiple_choice":
        return _encode_multiple_choice(task, examples, tokenizer, max_length, segments)
    if task.kind == "span_qa":
        return _encode_span_qa(examples, tokenizer, max_length, doc_stride, segments)
    label_ids = {label: i for i, label in enumerate(task.labels)}
    features = []
    if task.kind == "classification":
        firsts = [e.text_a for e in examples]
        seconds = [e.text_b for e in examples]
        pair = seconds and seconds[0] is not None
        encoded = tokenizer(firsts, seconds if pair else None, truncation=True, max_length=max_length,
                            return_token_type_ids=segments)
        types = encoded["token_type_ids"] if segments else [None] * len(examples)
        for ids, example, type_ids in zip(encoded["input_ids"], examples, types):
            features.append(Features(ids, label_ids[example.label], type_ids))
    elif task.kind == "tagging":
        encoded = tokenizer([list(e.tokens) for e in examples], is_split_into_words=True,
                            truncation=True, max_length=max_length, return_token_type_ids=segments)
        bare = bare_word_start_id(tokenizer)
        for i, example in enumerate(examples):
            ids = encoded["input_ids"][i]
            labels = [IGNORE_INDEX] * len(ids)
            for word, position in word_label_positions(encoded.word_ids(i), ids, bare).items():
                labels[position] = label_ids[example.tags[word]]
            features.append(Features(ids, labels, encoded["token_type_ids"][i] if segments else None))
    else:
        head_class(task)  # raises the clear "no head" error
    return features


def bare_word_start_id(tokenizer) -> int | None:
    """The id of a sub-token that is only SentencePiece's word-start marker "▁" (XLM-R), or None
    (WordPiece tokenizers such as mBERT's have none)."""
    token_id = tokenizer.convert_tokens_to_ids("▁")
    if token_id is None or token_id == tokenizer.unk_token_id:
        return None
    return token_id if tokenizer.convert_ids_to_tokens(token_id) == "▁" else None


def word_label_positions(word_ids: list, input_ids: list[int], bare: int | None) -> dict[int, int]:
    """Word index -> the one sub-token that carries (and is scored for) the word's tag: its first
    sub-token (XTREME's convention), except a bare "▁": XLM-R's tokenizer splits most Chinese and
    Japanese words into "▁" + the characters, and that first piece is the same token for every word
    (and almost never a word start in English training data), so zero-shot it tells the head nothing;
    the word's first other sub-token is used instead (measured: UD-POS zh in benchmarks/README.md)."""
    positions: dict[int, int] = {}
    for j, word in enumerate(word_ids):
        if word is None:
            continue
        if word not in positions:
            positions[word] = j
        elif bare is not None and input_ids[positions[word]] == bare and input_ids[j] != bare:
            positions[word] = j
    return positions


def choice_label(task: TaskSpec, index: int) -> str:
    """The name of choice slot `index` of a multiple-choice task (see the module docstring)."""
    if not task.labels:
        return str(index)
    if not 0 <= index < len(task.labels):
        raise ValueError(f"task {task.name}: choice index {index} has no label; labels are {', '.join(task.labels)}")
    return task.labels[index]


def _encode_multiple_choice(task: TaskSpec, examples: list, tokenizer, max_length: int,
                            segments: bool = False) -> list[MultipleChoiceFeatures]:
    if not examples:
        return []
    counts = {len(e.choices) for e in examples}
    if len(counts) != 1:
        raise ValueError(f"task {task.name}: examples have different numbers of choices ({sorted(counts)}); "
                         "a batch needs the same number for every example")
    n_choices = counts.pop()
    if task.labels and n_choices > len(task.labels):
        raise ValueError(f"task {task.name}: examples have {n_choices} choices but the task names only "
                         f"{len(task.labels)} choice labels ({', '.join(task.labels)})")
    firsts, seconds = [], []
    for e in examples:
        first = f"{e.context} {e.question}".strip() if e.question else e.context
        for choice in e.choices:
            firsts.append(first)
            seconds.append(choice)
    # longest_first: the (usually long) context is cut before the (short) choice.
    tokenized = tokenizer(firsts, seconds, truncation=True, max_length=max_length, return_token_type_ids=segments)
    encoded = tokenized["input_ids"]
    features = []
    for i, e in enumerate(examples):
        if not 0 <= e.label < n_choices:
            raise ValueError(f"task {task.name}: label {e.label} is not a choice index (0..{n_choices - 1})")
        rows = slice(i * n_choices, (i + 1) * n_choices)
        features.append(MultipleChoiceFeatures(encoded[rows], e.label,
                                               tokenized["token_type_ids"][rows] if segments else None))
    return features


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


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------

def pad_sequences(sequences: list[list[int]], width: int, pad_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    # Padding is masked out, so its id only has to be a valid token: 0 when the tokenizer names none.
    input_ids = torch.full((len(sequences), width), 0 if pad_token_id is None else pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, :len(ids)] = 1
    return input_ids, attention_mask


def collate(batch: list[AnyFeatures], pad_token_id: int | None) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch (dynamic padding).

    Returns exactly the keyword arguments of the task's HF head: input_ids, attention_mask
    (token_type_ids too when the features carry them, padded with 0) and labels
    (classification, tagging, multiple choice: [batch, n_choices, length] inputs) or
    start_positions/end_positions (span_qa).
    """
    first = batch[0]
    if isinstance(first, MultipleChoiceFeatures):
        n_choices = len(first.input_ids)
        width = max(feature_length(f) for f in batch)
        flat = [ids for f in batch for ids in f.input_ids]
        input_ids, attention_mask = pad_sequences(flat, width, pad_token_id)
        shape = (len(batch), n_choices, width)
        inputs = {"input_ids": input_ids.view(shape), "attention_mask": attention_mask.view(shape)}
        if first.token_type_ids is not None:
            inputs["token_type_ids"] = pad_sequences([t for f in batch for t in f.token_type_ids], width, 0)[0].view(shape)
        return {**inputs, "labels": torch.tensor([f.labels for f in batch], dtype=torch.long)}
    width = max(len(f.input_ids) for f in batch)
    input_ids, attention_mask = pad_sequences([f.input_ids for f in batch], width, pad_token_id)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if first.token_type_ids is not None:
        inputs["token_type_ids"] = pad_sequences([f.token_type_ids for f in batch], width, 0)[0]
    if isinstance(first, QAFeatures):
        return {**inputs,
                "start_positions": torch.tensor([f.start_position for f in batch], dtype=torch.long),
                "end_positions": torch.tensor([f.end_position for f in batch], dtype=torch.long)}
    token_labels = isinstance(first.labels, list)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long) if token_labels else torch.empty(len(batch), dtype=torch.long)
    for row, f in enumerate(batch):
        if token_labels:
            labels[row, :len(f.input_ids)] = torch.tensor(f.labels)
        else:
            labels[row] = f.labels
    return {**inputs, "labels": labels}


def batches_by_length(features: list[AnyFeatures], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (sorted), so dynamic padding wastes little."""
    order = sorted(range(len(features)), key=lambda i: feature_length(features[i]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------

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


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what `predict` feeds the model


@torch.no_grad()
def predict(task: TaskSpec, model, features: list[AnyFeatures], pad_token_id: int,
            batch_size: int = 64, device: str | torch.device = "cpu", *, n_best_size: int = N_BEST_SIZE,
            max_answer_length: int = MAX_ANSWER_LENGTH, allow_no_answer: bool = False):
    """Predictions: a list with one per example (a label string; a tag list per word for tagging;
    a choice label for multiple choice), or for span_qa a dict {example id: answer string}
    (see `decode_answers`, which the QA-only keyword arguments go to)."""
    model.eval()
    limit = max_positions(getattr(model, "config", None))
    longest = max((feature_length(f) for f in features), default=0)
    if limit is not None and longest > limit:
        raise ValueError(f"task {task.name}: features of {longest} tokens but the model holds {limit} positions; "
                         "encode with a smaller max_length")
    if task.kind == "span_qa":
        start_logits: list = [None] * len(features)
        end_logits: list = [None] * len(features)
    predictions: list = [None] * len(features)
    for indices in batches_by_length(features, batch_size):
        batch = collate([features[i] for i in indices], pad_token_id)
        inputs = {k: v.to(device) for k, v in batch.items() if k in _MODEL_INPUTS}
        output = model(**inputs)
        if task.kind == "span_qa":
            starts, ends = output.start_logits.float().cpu(), output.end_logits.float().cpu()
            for row, i in enumerate(indices):
                start_logits[i], end_logits[i] = starts[row], ends[row]
            continue
        best = output.logits.float().cpu().argmax(-1)
        for row, i in enumerate(indices):
            if task.kind == "classification":
                predictions[i] = task.labels[int(best[row])]
            elif task.kind == "multiple_choice":
                predictions[i] = choice_label(task, int(best[row]))
            else:
                scored = batch["labels"][row] != IGNORE_INDEX
                predictions[i] = [task.labels[int(t)] for t in best[row][scored]]
    if task.kind == "span_qa":
        return decode_answers(features, start_logits, end_logits, n_best_size, max_answer_length, allow_no_answer)
    return predictions


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def _qa_questions(predictions, examples: list) -> list[tuple[tuple[str, ...], str | None]]:
    if not isinstance(predictions, Mapping):  # a list aligned with the examples
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        predictions = {e.id: p for e, p in zip(examples, predictions)}
    # An unanswerable question's reference is "" (SQuAD v2.0): only the empty prediction matches
    # it exactly. (The shared token F1 gives 0 when both sides are empty, as SQuAD v1.1 does.)
    return [(tuple(e.answers) or ("",), predictions.get(e.id)) for e in examples]


def score(task: TaskSpec, predictions, examples: list, language: str = "en") -> dict[str, float]:
    """The task's metrics (0-100) from predictions; the selection metric is `task.metric`.

    `language` matters only for MLQA (task name "mlqa"), whose EM/F1 normalise answers by the
    rules of the answer language; every other QA task uses SQuAD's (English) normalisation for
    every language, as the official XQuAD/TyDiQA scorers do. A span_qa example missing from the
    predictions scores 0.
    """
    if task.kind == "classification":
        return {"accuracy": accuracy(predictions, [e.label for e in examples])}
    if task.kind == "multiple_choice":
        return {"accuracy": accuracy(predictions, [choice_label(task, e.label) for e in examples])}
    if task.kind == "span_qa":
        questions = _qa_questions(predictions, examples)
        if task.name == MLQA_TASK:
            return mlqa_em_f1(questions, language)
        return squad_em_f1(questions)
    if task.kind != "tagging":
        head_class(task)  # raises the clear "no head" error (retrieval: see tasks/retrieval.py)
    # Words beyond max_length were truncated away and get no prediction: score them as "O"-like
    # misses by padding with the first label, so truncation can only lower the score.
    gold = [list(e.tags) for e in examples]
    padded = [p + [task.labels[0]] * (len(g) - len(p)) for p, g in zip(predictions, gold)]
    return tagging_prf(padded, gold)


def evaluate(task: TaskSpec, model, tokenizer, examples: list, batch_size: int = 64,
             device: str | torch.device = "cpu", max_length: int | None = None, *,
             language: str = "en", doc_stride: int = DOC_STRIDE, features: list | None = None) -> dict[str, float]:
    """`score(predict(encode(...)))`; `language` as in `score`, `doc_stride` as in `encode`.

    `features`: the already encoded `examples` (e.g. read back from the feature cache, encoded
    with the same max_length and doc_stride); None: they are encoded here.
    """
    if features is None:
        features = encode(task, examples, tokenizer, max_length, doc_stride)
    predictions = predict(task, model, features, tokenizer.pad_token_id, batch_size, device)
    return score(task, predictions, examples, language)


def majority_baseline(task: TaskSpec, train_examples: list, examples: list, language: str = "en") -> dict[str, float]:
    """The score of always predicting the most frequent training label (chance, for reports).

    Multiple choice: the most frequent right choice slot. Extractive QA: the most frequent
    training answer string, given to every question.
    """
    if task.kind == "classification":
        top = Counter(e.label for e in train_examples).most_common(1)[0][0]
        return score(task, [top] * len(examples), examples)
    if task.kind == "multiple_choice":
        top = Counter(e.label for e in train_examples).most_common(1)[0][0]
        return score(task, [choice_label(task, top)] * len(examples), examples)
    if task.kind == "span_qa":
        answers = Counter(e.answers[0] for e in train_examples if e.answers).most_common(1)
        top_answer = answers[0][0] if answers else ""
        return score(task, {e.id: top_answer for e in examples}, examples, language)
    top = Counter(t for e in train_examples for t in e.tags).most_common(1)[0][0]
    return score(task, [[top] * len(e.tags) for e in examples], examples)
