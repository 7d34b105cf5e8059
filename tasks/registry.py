"""The task registry: every task a study can name, by name."""
from __future__ import annotations

import difflib

from xstilts.tasks import synthetic
from xstilts.tasks.base import TaskSpec

NONE = "none"  # the intermediate-task choice that skips phase 2 (the paper's baseline)

_NLI_LABELS = ("entailment", "neutral", "contradiction")
_NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")

TASKS: dict[str, TaskSpec] = {}


def register(task: TaskSpec) -> TaskSpec:
    if task.name in TASKS or task.name == NONE:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


register(TaskSpec(
    name="synthetic_xnli", kind="classification", languages=synthetic.LANGUAGES, labels=_NLI_LABELS,
    metric="accuracy", loader=synthetic.synthetic_loader("nli", "xnli"), max_length=64,
    description="Synthetic XNLI-like sentence-pair NLI in 4 synthetic languages (embedded default).",
))
register(TaskSpec(
    name="synthetic_panx", kind="tagging", languages=synthetic.LANGUAGES, labels=_NER_LABELS,
    metric="f1", loader=synthetic.synthetic_loader("ner", "panx"), max_length=64,
    description="Synthetic PAN-X-like IOB2 NER in 4 synthetic languages (embedded default).",
))
register(TaskSpec(
    name="synthetic_tatoeba", kind="retrieval", languages=("near", "mid", "far"), labels=(),
    metric="accuracy", loader=synthetic.synthetic_retrieval_loader("tatoeba"), max_length=64,
    description="Synthetic Tatoeba-like sentence retrieval into English (embedded default; no training).",
))
register(TaskSpec(
    name="synthetic_mnli", kind="classification", languages=synthetic.LANGUAGES, labels=_NLI_LABELS,
    metric="accuracy", loader=synthetic.synthetic_loader("nli", "mnli"), max_length=64,
    description="Synthetic MNLI-like intermediate task (embedded default); English, and the 3 synthetic "
                "languages as translated/native non-English intermediate data (synthetic_mnli@near).",
))
register(TaskSpec(
    name="synthetic_qqp", kind="classification", languages=synthetic.LANGUAGES, labels=("not_duplicate", "duplicate"),
    metric="accuracy", loader=synthetic.synthetic_loader("paraphrase", "qqp"), max_length=64,
    description="Synthetic QQP-like paraphrase intermediate task (embedded default), in the 4 synthetic languages.",
))
register(TaskSpec(
    name="synthetic_squad", kind="span_qa", languages=synthetic.LANGUAGES, labels=(),
    metric="f1", loader=synthetic.synthetic_loader("qa", "squad"), max_length=96,
    description="Synthetic SQuAD-like extractive QA in 4 synthetic languages: the QA intermediate of the "
                "tiny NLI-vs-QA study (search_spaces/tiny/nli_vs_qa_xtremer_mbert.yaml).",
))


# The real tasks, in their official formats: the XTREME(-R) targets, then the English
# intermediate tasks of Phang et al. (2020). See docs/tasks.md.
from xstilts.tasks.english_tasks import INTERMEDIATE_TASKS  # noqa: E402  (after the synthetic tasks on purpose)
from xstilts.tasks.xtreme_tasks import TARGET_TASKS  # noqa: E402

for _task in TARGET_TASKS + INTERMEDIATE_TASKS:
    register(_task)

# The multimodal targets (IGLUE's XVNLI and MaRVL, and their synthetic counterparts).
from xstilts.tasks.multimodal_tasks import MULTIMODAL_TASKS  # noqa: E402

for _task in MULTIMODAL_TASKS:
    register(_task)

TARGET_TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TARGET_TASKS)
INTERMEDIATE_TASK_NAMES: tuple[str, ...] = tuple(t.name for t in INTERMEDIATE_TASKS)


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want the plain sentence
        return self.args[0]


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownTaskError(
            f"unknown task {name!r}: {hint}known tasks: {', '.join(sorted(TASKS))}"
        ) from None
