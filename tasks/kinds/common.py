"""What every task kind shares: feature types, tokenization limits, dynamic padding, batching.

The kind modules beside this one (classification, tagging, multiple_choice, span_qa, retrieval)
build on these; `xstilts.tasks.modeling` re-exports them for callers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from xstilts.tasks.base import TaskSpec

IGNORE_INDEX = -100  # the label of sub-tokens that are not scored (HF's loss ignores it)

# Extractive QA defaults (HF run_qa.py / SQuAD practice).
DOC_STRIDE = 128  # tokens of overlap between consecutive windows of a long context, at max_length 384
MAX_ANSWER_LENGTH = 30  # longest answer (in tokens) the decoder considers
N_BEST_SIZE = 20  # start and end candidates per window

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
    `wants_segment_ids`); None otherwise (the model then uses its default, all zeros).
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


def effective_doc_stride(max_length: int, doc_stride: int = DOC_STRIDE) -> int:
    """The window overlap actually used: `doc_stride`, but never more than a third of `max_length`.

    The default 128 at max_length 384 is HF run_qa.py's (there the tokenizer's `stride`, i.e.
    the overlap between consecutive windows; note that the legacy SQuAD processors XTREME used
    call the step between window starts `doc_stride`). For short windows (the tiny models' 64)
    128 would be longer than the window itself, so it is scaled down to max_length // 3.
    """
    return max(0, min(doc_stride, max_length // 3))


def wants_segment_ids(tokenizer) -> bool:
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
    if hasattr(first, "collate_batch"):  # features that carry more than token ids batch themselves (image regions)
        return first.collate_batch(batch, pad_token_id)
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




_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a prediction feeds the model


def check_positions(task: TaskSpec, model, features: list) -> None:
    """Features longer than the model's position table fail here, with the fix, not inside torch."""
    limit = max_positions(getattr(model, "config", None))
    longest = max((feature_length(f) for f in features), default=0)
    if limit is not None and longest > limit:
        raise ValueError(f"task {task.name}: features of {longest} tokens but the model holds {limit} positions; "
                         "encode with a smaller max_length")


def argmax_predictions(task: TaskSpec, model, features: list, pad_token_id: int | None, batch_size: int, device,
                       row_prediction) -> list:
    """One prediction per feature from the argmax of the head's logits:
    `row_prediction(best ids of the row, the collated batch, row)` turns a row into it."""
    check_positions(task, model, features)
    predictions: list = [None] * len(features)
    with torch.no_grad():
        for indices, batch, output in forward_batches(model, features, pad_token_id, batch_size, device):
            best = output.logits.float().cpu().argmax(-1)
            for row, i in enumerate(indices):
                predictions[i] = row_prediction(best[row], batch, row)
    return predictions


def forward_batches(model, features: list, pad_token_id: int | None, batch_size: int, device):
    """(indices, collated batch, model output) per length-sorted batch, in eval mode (callers
    run it under torch.no_grad)."""
    model.eval()
    for indices in batches_by_length(features, batch_size):
        batch = collate([features[i] for i in indices], pad_token_id)
        inputs = {k: v.to(device) for k, v in batch.items() if k in _MODEL_INPUTS}
        yield indices, batch, model(**inputs)
