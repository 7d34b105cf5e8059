"""Task definitions shared by `trainables` and `analysis`: data format, head kind, metric."""
from xstilts.tasks.base import DataOptions, PairExample, TaggingExample, TaskDataError, TaskSpec
from xstilts.tasks.registry import NONE, TASKS, UnknownTaskError, get_task

__all__ = [
    "DataOptions", "PairExample", "TaggingExample", "TaskDataError", "TaskSpec",
    "NONE", "TASKS", "UnknownTaskError", "get_task",
]
