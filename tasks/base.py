"""What a task is: one small typed definition (data format + loading, head kind, metric).

`tasks/` is shared by `trainables/` (which train on a task) and `analysis/` (which reads its
metric names): it imports neither Ray nor MLflow nor any other package of the project.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Union


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
    # Per-split file overrides of the local layout. Keys: "<task>:<split>" or
    # "<task>:<split>:<language>" (the more specific wins); values: a path relative to data_dir
    # (to the working directory when data_dir is None) or absolute, "{lang}" replaced by the
    # language, glob patterns allowed. An override makes that split local even without data_dir.
    # E.g. {"xnli:train": "xnli/test-en.labeled.tsv"}. See docs/tasks.md. Left out of the hash
    # (a dict is unhashable); still compared.
    files: Mapping[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.files is None:
            return
        if not isinstance(self.files, Mapping):
            raise TypeError(f"DataOptions.files must be a mapping of '<task>:<split>' to a path, got {type(self.files).__name__}")
        for key, value in self.files.items():
            if not isinstance(key, str) or not _FILES_KEY.fullmatch(key):
                raise ValueError(
                    f"DataOptions.files: bad key {key!r}; use '<task>:<split>' or '<task>:<split>:<language>' "
                    "with split 'train', 'dev' or 'test', e.g. 'xnli:train'"
                )
            if not isinstance(value, str) or not value:
                raise ValueError(f"DataOptions.files[{key!r}] must be a non-empty path string, got {value!r}")

    def file_override(self, task: str, split: str, language: str) -> str | None:
        """The override for (task, split, language), "{lang}" filled in; None when there is none."""
        if not self.files:
            return None
        value = self.files.get(f"{task}:{split}:{language}") or self.files.get(f"{task}:{split}")
        return None if value is None else value.replace("{lang}", language)


_FILES_KEY = re.compile(r"[a-z0-9_]+:(train|dev|test)(:[A-Za-z0-9_-]+)?")


# A loader returns the examples of one split ("train", "dev" or, where the task defines it,
# "test") of one language.
Loader = Callable[[str, str, DataOptions], list]

# Every task reads "train" and "dev". "test" (what `xstilts predict` writes submission files for)
# only where the task defines test data: TaskSpec.splits, by default the loader's `splits`
# attribute (the generated tasks' loaders carry one) or these two.
BASE_SPLITS = ("train", "dev")
SPLITS_WITH_TEST = ("train", "dev", "test")


@dataclass(frozen=True)
class TaskSpec:
    """One task: a name, its kind (which head), its languages, its labels, its metric, its loader.

    kind: "classification" (sequence classification head), "tagging" (token classification
      head, first sub-token of each word labelled), "multiple_choice", "span_qa" (extractive QA
      with a doc stride) or "retrieval" (no training: the phase-2 encoder's pooled states). A
      retrieval task's loader returns a one-element list holding a `RetrievalCorpus`.
    languages: every language the task is evaluated on zero-shot; `train_language` is the one
      whose training split phase 2/3 fine-tune on and whose dev split selects models.
    metric: the name of the selection metric in the task's score dict ("accuracy" or "f1";
      "map_at_20", XTREME-R's mAP@20, for LAReQA and Mewsli-X: MLflow keys allow no '@').
    labels: classification labels, tagging tags, and for multiple choice the choice positions
      ("0", "1", ...); empty for span_qa and retrieval.
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
    # span_qa: how answers are normalised before EM/F1: "squad" (SQuAD's English rules, for every
    # language, as the official XQuAD/TyDiQA scorers do) or "mlqa" (MLQA's per-language rules).
    answer_normalization: str = "squad"
    # tagging: how predicted tags are scored: "seqeval" (chunk precision/recall/F1 as seqeval's
    # conlleval mode, XTREME's UD-POS and PAN-X scorer; metric "f1") or "accuracy" (token
    # accuracy, jiant's CCG supertagging metric; metric "accuracy").
    tag_metric: str = "seqeval"
    # Whether the hub's training split exists per language as translated data (XNLI's and PAWS-X's
    # machine-translated training sets, PAN-X's per-language training data). False for the QA
    # targets: the hub has English SQuAD only, so translate-train needs XTREME's translated files.
    translated_train_on_hub: bool = True
    # The public HF hub dataset ids the loader reads when DataOptions.data_dir is None (empty:
    # not on the hub, or generated).
    hub: tuple[str, ...] = ()
    # Which local files (split, language, options) would be read (paths under data_dir, or the
    # overrides); raises TaskDataError when they are missing. None for tasks without a local
    # layout (synthetic).
    locate: Callable[[str, str, DataOptions], tuple[str, ...]] | None = field(default=None, repr=False, compare=False)
    # For tasks whose label set comes from the data (CCG supertags): options -> labels. `labels`
    # is then empty until `resolved(options)` fills it in.
    label_source: Callable[[DataOptions], tuple[str, ...]] | None = field(default=None, repr=False, compare=False)
    # The splits the loader reads (BASE_SPLITS, or SPLITS_WITH_TEST where the task defines test
    # data); None: the loader's own `splits` attribute, else BASE_SPLITS. "dev" is what a
    # language is evaluated on zero-shot during a study; "test" only what `xstilts predict` reads.
    splits: tuple[str, ...] | None = None

    @property
    def available_splits(self) -> tuple[str, ...]:
        return self.splits if self.splits is not None else tuple(getattr(self.loader, "splits", BASE_SPLITS))

    def _check(self, split: str, language: str) -> None:
        if split not in self.available_splits:
            known = self.available_splits
            raise ValueError(f"task {self.name}: unknown split {split!r}; use "
                             + " or ".join(repr(s) for s in known)
                             + (" (this task defines no test data)" if split == "test" else ""))
        if language not in self.languages and language != self.train_language:
            raise ValueError(
                f"task {self.name} has no language {language!r}; it has {', '.join(self.languages)}"
            )

    def load(self, split: str, language: str, options: DataOptions = DataOptions()) -> list:
        self._check(split, language)
        examples = self.loader(split, language, options)
        if options.max_examples is not None:
            examples = examples[: options.max_examples]
        return examples

    def has_data(self, split: str, language: str, options: DataOptions = DataOptions()) -> bool:
        """Whether the local files for (split, language) exist: under options.data_dir, or the
        DataOptions.files override (it looks at files, it does not read them). When the split is
        not local: whether the task is on the HF hub. Always True for generated (synthetic) tasks."""
        self._check(split, language)
        if self.locate is None:  # generated data
            return True
        local = options.data_dir is not None or options.file_override(self.name, split, language) is not None
        if not local:  # the hub decides; a task that is not on it has no data
            translated = split != "train" or language == self.train_language or self.translated_train_on_hub
            return bool(self.hub) and translated
        try:
            self.locate(split, language, options)
        except TaskDataError:
            return False
        return True

    def resolved(self, options: DataOptions = DataOptions()) -> "TaskSpec":
        """This task with its labels filled in from the data when they come from it (CCG);
        otherwise itself."""
        if self.label_source is None or self.labels:
            return self
        return replace(self, labels=tuple(self.label_source(options)))
