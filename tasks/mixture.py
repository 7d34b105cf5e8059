"""Multi-task mixtures: which task each training step draws its example from.

A `TaskMixture` names its tasks and how they are sampled:
  proportional   p_i = w_i n_i / sum_j w_j n_j                 (examples-proportional mixing)
  temperature    p_i = w_i n_i^(1/T) / sum_j w_j n_j^(1/T)     (T = 1: proportional; T -> inf: uniform)
where n_i is the number of training examples of task i and w_i an optional weight (default 1):
weights set a ratio between sources of equal size (e.g. English MNLI 3 : German XNLI 1), which
temperature alone cannot. `sampling_probabilities` computes them
(pure), `sample_schedule` turns them into a deterministic, seeded sequence of
(task name, example index) pairs. Within a task the indices walk through a seeded permutation
of its examples and start a fresh one when it is used up, so every example of a task is seen
once before any is seen twice.

Pure Python (no Ray, no torch): the same seed gives the same schedule in every process.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator, Mapping

SAMPLING_MODES = ("proportional", "temperature")


class MixtureError(ValueError):
    """A TaskMixture field that is wrong: `field_name` (tasks, sampling, temperature, weights),
    the problem and its fix, so a config naming the mixture can point at the field."""

    def __init__(self, field_name: str, problem: str, fix: str):
        self.field_name, self.problem, self.fix = field_name, problem, fix
        super().__init__(f"TaskMixture.{field_name} {problem}; {fix}")


class MixtureTypeError(MixtureError, TypeError):
    pass


@dataclass(frozen=True)
class TaskMixture:
    """The one shape of a multi-task mixture, from the study config to the train loop.

    tasks: the "task" / "task@lang" training splits mixed (at least one, no repeats; in a study
    config as written, in a trial resolved to full "task@lang" names); sampling: "proportional"
    or "temperature"; temperature: T > 0 of temperature sampling (ignored by proportional);
    weights: one per task, > 0, multiplying its sampling weight (None: all 1); mlm_weight: the
    weight of a masked-LM auxiliary loss on unlabeled multilingual text added to every step of
    this phase 2 (None: the study's training.mlm_weight), so one arm of a study can be "task +
    MLM" beside the plain task (the paper's MLM-auxiliary arm)."""

    tasks: tuple[str, ...]
    sampling: str = "proportional"
    temperature: float = 1.0
    weights: tuple[float, ...] | None = None
    mlm_weight: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str) or not isinstance(self.tasks, tuple) \
                or not all(isinstance(task, str) for task in self.tasks):
            raise MixtureTypeError("tasks", f"must be a tuple of task names, got {self.tasks!r}"[:200], "e.g. [mnli, squad]")
        if not self.tasks:
            raise MixtureError("tasks", "is empty", "name at least one task")
        if len(set(self.tasks)) != len(self.tasks):
            raise MixtureError("tasks", f"names a task twice: {', '.join(self.tasks)}", "remove the duplicate")
        if self.sampling not in SAMPLING_MODES:
            raise MixtureError("sampling", f"must be one of {', '.join(SAMPLING_MODES)}, got {self.sampling!r}"[:200],
                               f"use one of: {', '.join(SAMPLING_MODES)}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not math.isfinite(self.temperature) or self.temperature <= 0:
            raise MixtureError("temperature", f"must be a finite number > 0, got {self.temperature!r}"[:200],
                               "e.g. 2.0 (1.0 = proportional)")
        if self.weights is not None:
            if not isinstance(self.weights, tuple) or len(self.weights) != len(self.tasks) or not all(
                    not isinstance(w, bool) and isinstance(w, (int, float)) and math.isfinite(w) and w > 0
                    for w in self.weights):
                raise MixtureError("weights", f"must be one number > 0 per task ({len(self.tasks)}), got {self.weights!r}"[:200],
                                   "e.g. weights: [3, 1]")
        if self.mlm_weight is not None and (isinstance(self.mlm_weight, bool) or not isinstance(self.mlm_weight, (int, float))
                                            or not math.isfinite(self.mlm_weight) or self.mlm_weight < 0):
            raise MixtureError("mlm_weight", f"must be a finite number >= 0, got {self.mlm_weight!r}"[:200],
                               "e.g. mlm_weight: 1.0 (0: no MLM loss for this arm)")

    def to_dict(self) -> dict:
        """Plain lists and numbers (what a Tune config and params.json carry)."""
        return {"tasks": list(self.tasks), "sampling": self.sampling, "temperature": self.temperature,
                "weights": list(self.weights) if self.weights else None, "mlm_weight": self.mlm_weight}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TaskMixture":
        weights = d.get("weights")
        return cls(tuple(d["tasks"]), d.get("sampling", "proportional"), d.get("temperature", 1.0),
                   tuple(weights) if weights else None, d.get("mlm_weight"))

    def mlm_weight_or(self, default: float) -> float:
        """This phase's MLM weight: the mixture's own, else the study's training.mlm_weight."""
        return default if self.mlm_weight is None else float(self.mlm_weight)

    def probabilities(self, sizes: Mapping[str, int]) -> dict[str, float]:
        return sampling_probabilities(self, sizes)


def sampling_probabilities(mixture: TaskMixture, sizes: Mapping[str, int]) -> dict[str, float]:
    """{task: probability} in the mixture's task order, from {task: number of examples}.

    Proportional: n_i / sum n_j. Temperature: n_i^(1/T) / sum n_j^(1/T). Every task of the
    mixture needs a size >= 1 (a task without examples cannot be sampled); extra keys are an
    error too, so a typo cannot silently drop a task."""
    missing = [t for t in mixture.tasks if t not in sizes]
    extra = [t for t in sizes if t not in mixture.tasks]
    if missing or extra:
        raise ValueError(f"sizes must name exactly the mixture's tasks: missing {missing}, unexpected {extra}")
    for task in mixture.tasks:
        n = sizes[task]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"task {task!r}: size must be an integer >= 1, got {n!r}")
    exponent = 1.0 if mixture.sampling == "proportional" else 1.0 / mixture.temperature
    # Scale by the largest size first: n^(1/T) of large n and small T overflows a float.
    largest = max(sizes[t] for t in mixture.tasks)
    factors = mixture.weights or (1.0,) * len(mixture.tasks)
    weights = [factor * (sizes[t] / largest) ** exponent for t, factor in zip(mixture.tasks, factors)]
    total = math.fsum(weights)
    return {task: weight / total for task, weight in zip(mixture.tasks, weights)}


def sample_schedule(mixture: TaskMixture, sizes: Mapping[str, int], steps: int,
                    seed: int = 0) -> Iterator[tuple[str, int]]:
    """`steps` (task name, example index) pairs, each task drawn with its sampling probability
    and its example indices taken from a seeded permutation of range(size) (reshuffled each
    pass). Deterministic for (mixture, sizes, steps, seed)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    probabilities = sampling_probabilities(mixture, sizes)
    tasks = list(mixture.tasks)
    cumulative, running = [], 0.0
    for task in tasks:
        running += probabilities[task]
        cumulative.append(running)
    cumulative[-1] = 1.0
    chooser = random.Random(f"{seed}:choose")
    shufflers = {task: random.Random(f"{seed}:order:{task}") for task in tasks}
    orders: dict[str, list[int]] = {task: [] for task in tasks}
    positions = {task: 0 for task in tasks}
    for _ in range(steps):
        u = chooser.random()
        task = tasks[next(i for i, edge in enumerate(cumulative) if u < edge)]
        if positions[task] == len(orders[task]):
            order = list(range(sizes[task]))
            shufflers[task].shuffle(order)
            orders[task], positions[task] = order, 0
        yield task, orders[task][positions[task]]
        positions[task] += 1


# ANLI+ as a sampled mixture of its four parts (the registered `anli_plus` task concatenates
# them instead, as the paper does): for multi-task training with proportional or temperature
# sampling.
ANLI_PLUS = TaskMixture(("anli", "mnli", "snli", "fever_nli"), "proportional")


# --- Data sources: which training split of which language ----------------------------------

SOURCE_SEPARATOR = "@"


def parse_source(source: str) -> tuple[str, str | None]:
    """"xnli@de" -> ("xnli", "de"); "mnli" -> ("mnli", None) (None: the task's train_language)."""
    task, separator, language = source.partition(SOURCE_SEPARATOR)
    if separator and not language:
        raise ValueError(f"data source {source!r} has an empty language after '@'; write e.g. xnli@de")
    return task, (language or None)


def source_name(task: str, language: str) -> str:
    return f"{task}{SOURCE_SEPARATOR}{language}"
