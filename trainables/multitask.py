"""Multi-task phase 2: one shared encoder, one head per task, and an optional MLM head.

A mixture (e.g. MNLI + SQuAD, or MNLI in English + XNLI translate-train in German) trains a
fresh task head per distinct task on one encoder; each step draws one batch from one source
(`task@lang` training split) with the mixture's sampling. Sources of the same task in different
languages share that task's head. With `training.mlm_weight > 0`, every step also adds
`mlm_weight` x the masked-LM loss of a batch of unlabeled multilingual text, through the
pretrained model's own LM head (tied to the shared word embeddings).

Heads are the stock HF `AutoModelFor...` classes (so a single-task phase is exactly the plain
model): their encoders are replaced by the first head's encoder module, which makes every
parameter of the encoder one tensor that every head trains.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from xstilts.tasks.mixture import TaskMixture, sample_schedule
from xstilts.tasks.modeling import IGNORE_INDEX, load_model_for_task

MLM_HEAD = "__mlm__"


def _key(name: str) -> str:
    return name.replace(".", "_")  # ModuleDict keys cannot hold dots


class MultiTaskModel(torch.nn.Module):
    """`forward(head, **batch)` runs the batch through that task's head on the shared encoder."""

    def __init__(self, heads: dict[str, torch.nn.Module]):
        super().__init__()
        self.names = list(heads)
        self.heads = torch.nn.ModuleDict({_key(name): model for name, model in heads.items()})

    def head(self, name: str) -> torch.nn.Module:
        return self.heads[_key(name)]

    @property
    def encoder(self):
        """The shared encoder (a `PreTrainedModel`: `save_pretrained` writes it alone)."""
        return self.head(self.names[0]).base_model

    def forward(self, head: str, mlm_batch: dict | None = None, mlm_weight: float = 0.0, **batch) -> "StepOutput":
        """One step's loss: the head's task loss, plus `mlm_weight` x the MLM loss of `mlm_batch`.

        Both in one forward call: DDP allows one forward per backward."""
        loss = self.heads[_key(head)](**batch).loss
        mlm_loss = None
        if mlm_batch is not None:
            mlm_loss = self.heads[_key(MLM_HEAD)](**mlm_batch).loss
            loss = loss + mlm_weight * mlm_loss
        return StepOutput(loss, mlm_loss)


@dataclass
class StepOutput:
    loss: torch.Tensor
    mlm_loss: torch.Tensor | None = None


def share_encoder(target: torch.nn.Module, encoder: torch.nn.Module) -> None:
    """Make `target` run on `encoder` (same prefix attribute: `roberta`, `bert`, ...)."""
    prefix = target.base_model_prefix
    if not hasattr(target, prefix):
        raise ValueError(f"{type(target).__name__} keeps its encoder under no attribute {prefix!r}")
    setattr(target, prefix, encoder)


def build_multitask_model(tasks: list, init_path: str, with_mlm: bool) -> MultiTaskModel:
    """A head per task (in order) on the encoder of the first, plus the LM head when `with_mlm`."""
    heads: dict[str, torch.nn.Module] = {}
    encoder = None
    for task in tasks:
        model = load_model_for_task(task, init_path)
        if encoder is None:
            encoder = model.base_model
        else:
            share_encoder(model, encoder)
        heads[task.name] = model
    if with_mlm:
        from transformers import AutoModelForMaskedLM

        mlm = AutoModelForMaskedLM.from_pretrained(init_path)
        share_encoder(mlm, encoder)
        mlm.tie_weights()  # the LM decoder must follow the shared word embeddings, not its own copy
        heads[MLM_HEAD] = mlm
    return MultiTaskModel(heads)


def mixture_steps(batch_counts: dict[str, int], sampling: str, temperature: float, seed: int,
                  epoch: int, weights: dict[str, float] | None = None) -> list[tuple[str, int]]:
    """One epoch of (source, batch index) draws: as many steps as all sources have batches, each
    source drawn with the mixture's probability (computed from batch counts, which at a fixed
    batch size are proportional to example counts, and the optional per-source `weights`), its
    batches walked in a seeded order."""
    sources = [name for name, count in batch_counts.items() if count > 0]
    if len(sources) == 1:
        return [(sources[0], i) for i in range(batch_counts[sources[0]])]
    mixture = TaskMixture(tuple(sources), sampling, temperature,
                          tuple(weights[name] for name in sources) if weights else None)
    steps = sum(batch_counts[name] for name in sources)
    return list(sample_schedule(mixture, {name: batch_counts[name] for name in sources}, steps,
                                seed=seed * 1000 + epoch))


# --- MLM auxiliary data ------------------------------------------------------------------------

def source_probabilities(batch_counts: dict[str, int], sampling: str, temperature: float,
                         weights: dict[str, float] | None = None) -> dict[str, float]:
    """The probability each source is drawn with (what `mixture_steps` samples from)."""
    from xstilts.tasks.mixture import sampling_probabilities

    sources = [name for name, count in batch_counts.items() if count > 0]
    mixture = TaskMixture(tuple(sources), sampling, temperature,
                          tuple(weights[name] for name in sources) if weights else None)
    return sampling_probabilities(mixture, {name: batch_counts[name] for name in sources})


def load_mlm_corpus(spec: str, limit: int | None, seed: int) -> list[str]:
    """The unlabeled sentences: "synthetic" (the embedded model's 4-language corpus) or a UTF-8
    text file with one sentence per line (blank lines skipped); the first `limit` lines."""
    if spec == "synthetic":
        from xstilts.tasks.synthetic import corpus

        lines = corpus(sentences_per_language=500, seed=seed + 1)  # not the pre-training sentences
    else:
        try:
            with open(spec, encoding="utf-8") as handle:
                lines = [line.strip() for line in handle if line.strip()]
        except OSError as error:
            raise FileNotFoundError(f"training.mlm_corpus: cannot read {spec!r} ({error.strerror}); "
                                    "give a text file with one sentence per line") from None
        if not lines:
            raise ValueError(f"training.mlm_corpus: {spec!r} has no text; give one sentence per line")
    random.Random(seed).shuffle(lines)  # languages interleaved, whatever the file order
    return lines[:limit] if limit else lines


def encode_mlm_corpus(lines: list[str], tokenizer, max_length: int) -> list[list[int]]:
    return tokenizer(lines, truncation=True, max_length=max_length)["input_ids"]


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer, probability: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: `probability` of the real, non-special tokens are predicted; of those 80 %
    become <mask>, 10 % a random token, 10 % stay. Returns (inputs, labels)."""
    labels = input_ids.clone()
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for token_id in tokenizer.all_special_ids:
        special |= input_ids == token_id
    candidates = attention_mask.bool() & ~special
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    if not chosen.any():  # at least one prediction per batch, so the loss is defined
        positions = candidates.nonzero()
        if len(positions):
            row, column = positions[torch.randint(len(positions), (1,), generator=generator)][0]
            chosen[row, column] = True
    labels[~chosen] = IGNORE_INDEX
    inputs = input_ids.clone()
    roll = torch.rand(input_ids.shape, generator=generator)
    inputs[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_tokens = torch.randint(len(tokenizer), input_ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_tokens[swap]
    return inputs, labels
