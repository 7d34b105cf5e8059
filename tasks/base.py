"""What a task is: one small typed definition (data format + loading, head kind, metric).

`tasks/` is shared by `trainables/` (which train on a task) and `analysis/` (which reads its
metric names): it imports neither Ray nor MLflow nor any other package of the project.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union


class TaskDataError(ValueError):
    """A task's data cannot be read (missing file, malformed line). The message names file and fix."""


@dataclass(frozen=True)
class PairExample:
    """Sentence or sentence-pair classification (XNLI, PAWS-X, MNLI, QQP)."""

    text_a: str
    text_b: str | None
    label: str


@dataclass(frozen=True)
class TaggingExample:
    """Token tagging (UD-POS, PAN-X, CCG): one tag per word."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class MultipleChoiceExample:
    """Multiple choice (COPA/XCOPA, HellaSwag, SWAG, CosmosQA, CommonsenseQA, PIQA).

    Each choice is scored as the pair (context, choice); `label` is the index of the right one.
    """

    context: str
    choices: tuple[str, ...]
    label: int
    question: str = ""


@dataclass(frozen=True)
class SpanQAExample:
    """Extractive QA in SQuAD v1.1/v2.0 form (SQuAD, XQuAD, MLQA, TyDiQA-GoldP).

    `answers` are the reference texts, `answer_starts` their character offsets in `context`
    (empty for an unanswerable SQuAD v2.0 question).
    """

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


@dataclass(frozen=True)
class RetrievalCorpus:
    """Sentence retrieval (BUCC, Tatoeba): sentences of a language and of English, and the gold
    pairs (source id, English id). Tatoeba is line-aligned: ids are line numbers as strings."""

    source_ids: tuple[str, ...]
    source_sentences: tuple[str, ...]
    target_ids: tuple[str, ...]
    target_sentences: tuple[str, ...]
    gold: tuple[tuple[str, str], ...]


Example = Union[PairExample, TaggingExample, MultipleChoiceExample, SpanQAExample, RetrievalCorpus]


@dataclass(frozen=True)
class DataOptions:
    """Where and how much data to read; the same options reach every task loader.

    data_dir: a local folder in the official file formats (None: the loader's default source,
      the HF hub for real tasks, the generator for synthetic ones).
    max_examples: cap per split and language (None: all); the first N in file order, so
      subsampling is deterministic.
    seed: for generated data.
    """

    data_dir: str | None = None
    max_examples: int | None = None
    seed: int = 0


# A loader returns the examples of one split ("train" or "dev") of one language.
Loader = Callable[[str, str, DataOptions], list]


@dataclass(frozen=True)
class TaskSpec:
    """One task: a name, its kind (which head), its languages, its labels, its metric, its loader.

    kind: "classification" (sequence classification head), "tagging" (token classification
      head, first sub-token of each word labelled), "multiple_choice", "span_qa" (extractive QA
      with a doc stride) or "retrieval" (no training: the phase-2 encoder's pooled states). A
      retrieval task's loader returns a one-element list holding a `RetrievalCorpus`.
    languages: every language the task is evaluated on zero-shot; `train_language` is the one
      whose training split phase 2/3 fine-tune on and whose dev split selects models.
    metric: the name of the selection metric in the task's score dict ("accuracy" or "f1").
    """

    name: str
    kind: str
    languages: tuple[str, ...]
    labels: tuple[str, ...]
    metric: str
    loader: Loader = field(repr=False, compare=False)
    train_language: str = "en"
    max_length: int = 128
    description: str = ""

    def load(self, split: str, language: str, options: DataOptions = DataOptions()) -> list:
        if split not in ("train", "dev"):
            raise ValueError(f"task {self.name}: unknown split {split!r}; use 'train' or 'dev'")
        if language not in self.languages and language != self.train_language:
            raise ValueError(
                f"task {self.name} has no language {language!r}; it has {', '.join(self.languages)}"
            )
        examples = self.loader(split, language, options)
        if options.max_examples is not None:
            examples = examples[: options.max_examples]
        return examples
