"""Loud failure when a Ray upgrade moves an internal xstilts relies on (xstilts.trainables.ray_compat).

At run time each workaround degrades quietly (a study never breaks on it); this test is what
tells a maintainer which problem would come back, so it names it.
"""
from __future__ import annotations

import importlib

import pytest

from xstilts.trainables.ray_compat import INTERNALS


@pytest.mark.parametrize("module, attribute, lost", INTERNALS, ids=[f"{m}.{a}" for m, a, _ in INTERNALS])
def test_ray_internal_is_where_xstilts_expects_it(module, attribute, lost):
    try:
        found = importlib.import_module(module)
    except ImportError as error:
        pytest.fail(f"Ray moved {module} ({error}): {lost}. Update trainables/ray_compat.py.")
    assert hasattr(found, attribute), f"Ray moved {module}.{attribute}: {lost}. Update trainables/ray_compat.py."


def test_no_ray_internal_is_used_outside_the_compat_module():
    """One owner: other modules reach Ray internals only through xstilts.trainables.ray_compat."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("study", "trainables", "analysis", "tasks", "search_spaces", "xstilts"):
        for path in (root / folder).rglob("*.py"):
            if path.name in ("ray_compat.py", "rehearsal.py"):  # rehearsal drives a test cluster
                continue
            text = path.read_text()
            if any(internal in text for internal in ("ray._private", "ray.train._internal", "ray.data._internal")):
                offenders.append(str(path.relative_to(root)))
    assert not offenders, offenders
