"""Task definitions shared by `trainables` and `analysis`: data format, head kind, metric."""
from tasks.base import DataOptions, PairExample, TaggingExample, TaskDataError, TaskSpec
from tasks.registry import NONE, TASKS, UnknownTaskError, get_task

__all__ = [
    "DataOptions", "PairExample", "TaggingExample", "TaskDataError", "TaskSpec",
    "NONE", "TASKS", "UnknownTaskError", "get_task",
]
