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


Example = Union[PairExample, TaggingExample]


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

    kind: "classification" (sequence classification head) or "tagging" (token classification
      head, first sub-token of each word labelled).
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
