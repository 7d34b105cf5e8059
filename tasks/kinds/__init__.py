"""Task kinds as types: each kind owns its HF head, how its examples become features, how a
model's outputs become predictions, how predictions are scored and its chance baseline.

    KINDS[task.kind].encode / .predict / .score / .majority_baseline

`xstilts.tasks.modeling` dispatches its public functions here, so callers never switch on
`task.kind`. Adding a kind is one module that defines a `TaskKind` subclass and registers an
instance with `register` (imported at the bottom of this file).
"""
from __future__ import annotations

from typing import ClassVar

from xstilts.tasks.base import TaskSpec


class TaskKind:
    """One kind of task. Subclasses set `name` and `head` (an `AutoModelFor...` class; None for
    kinds that do not train) and implement what they support."""

    name: ClassVar[str]
    head: ClassVar[type | None] = None
    # Whether phase 3 trains on it; retrieval targets use the phase-2 encoder as it is.
    trainable: ClassVar[bool] = True

    def task_type(self, task: TaskSpec) -> str:
        """What the research-question tables call the task (NLI, extractive QA, ...)."""
        return self.name

    def head_labels(self, task: TaskSpec) -> tuple[str, ...]:
        """The names of the head's outputs, stored in the model config (id2label)."""
        return task.labels

    def encode(self, task: TaskSpec, examples: list, tokenizer, max_length: int, doc_stride: int,
               segments: bool) -> list:
        raise self.no_head(task)

    def predict(self, task: TaskSpec, model, features: list, pad_token_id: int | None, batch_size: int, device,
                **decoding):
        raise self.no_head(task)

    def score(self, task: TaskSpec, predictions, examples: list, language: str) -> dict[str, float]:
        raise self.no_head(task)

    def majority_baseline(self, task: TaskSpec, train_examples: list, examples: list, language: str) -> dict[str, float]:
        raise self.no_head(task)

    def example_stats(self, task: TaskSpec, predictions, examples: list, language: str) -> list[tuple[float, float]] | None:
        """Per example, (numerator, denominator) with the selection metric = 100 x sum of
        numerators / sum of denominators: what an interval over examples resamples
        (xstilts.analysis.uncertainty.example_interval). None: the metric does not decompose."""
        return None

    def no_head(self, task: TaskSpec) -> ValueError:
        return ValueError(f"task {task.name}: kind {task.kind!r} has no training head yet")


KINDS: dict[str, TaskKind] = {}


def register(kind: TaskKind) -> TaskKind:
    if kind.name in KINDS:
        raise ValueError(f"task kind {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    return kind


def kind_of(task: TaskSpec | str) -> TaskKind:
    """The kind of a task (or a kind by name); a clear error for one nobody registered."""
    name = task if isinstance(task, str) else task.kind
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown task kind {name!r}; known kinds: {', '.join(sorted(KINDS))} "
                         "(a new kind registers itself in xstilts.tasks.kinds)") from None


def trainable_kinds() -> tuple[str, ...]:
    return tuple(name for name, kind in KINDS.items() if kind.trainable)


# The kinds shipped with xstilts, each registering itself (imported for that; listed in __all__
# so pyflakes sees them used).
from xstilts.tasks.kinds import classification, multiple_choice, retrieval, span_qa, tagging  # noqa: E402
from xstilts.tasks.kinds import multimodal_classification  # noqa: E402

__all__ = ["KINDS", "TaskKind", "kind_of", "register", "trainable_kinds",
           "classification", "multimodal_classification", "multiple_choice", "retrieval", "span_qa", "tagging"]
