"""Checking a config field where it is defined: the error every check raises, and the few checks
every dataclass needs. Shared by `xstilts.study` (the study config) and `xstilts.trainables` (the
training and resource options it embeds), which is why it lives at the top of the package.

Why not pydantic (v2): the checks here are a few lines per field, each error must be ONE line
naming the field and the fix (pydantic's are multi-line tables of every failure), and the same
dataclasses travel in Tune configs and Ray Train workers as plain dicts. A schema library would
replace ~60 lines of checks with a dependency and an adapter for its messages.
"""
from __future__ import annotations

import math
import reprlib
from typing import Any

MAX_QUOTED = 80  # characters of any value quoted in an error message

_short_repr = reprlib.Repr()
_short_repr.maxstring = _short_repr.maxother = _short_repr.maxlong = MAX_QUOTED
_short_repr.maxlist = _short_repr.maxtuple = _short_repr.maxdict = _short_repr.maxset = 6
_short_repr.maxlevel = 3


def one_line(text: str, limit: int) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(value: Any) -> str:
    """A value quoted in an error message: its repr, bounded (never built from a whole huge value)."""
    try:
        text = _short_repr.repr(value)
    except Exception:  # a repr that fails: name the type only
        text = f"<{type(value).__name__}>"
    return one_line(text, MAX_QUOTED)


class FieldError(ValueError):
    """One field's problem and its fix; `field_name` is relative to the dataclass that checks it
    (the study config prefixes it: `training.batch_size`)."""

    def __init__(self, field_name: str, problem: str, fix: str = ""):
        self.field_name = one_line(str(field_name), MAX_QUOTED)
        self.problem, self.fix = one_line(problem, 2000), one_line(fix, 2000)
        super().__init__(f"{self.field_name}: {self.problem}" + (f"; {self.fix}" if self.fix else ""))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: Any) -> bool:
    try:
        return is_number(value) and math.isfinite(value)
    except OverflowError:  # an int too big for a float
        return False


def positive_int(value: Any, field_name: str, fix: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FieldError(field_name, f"must be an integer >= 1, got {short(value)}", fix)


def int_in(value: Any, low: int, high: int, field_name: str, fix: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise FieldError(field_name, f"must be an integer in [{low}, {high}], got {short(value)}", fix)


def finite_number(value: Any, field_name: str) -> None:
    if not finite(value):
        raise FieldError(field_name, f"must be a finite number, got {short(value)}", "give a number (not .nan or .inf)")
