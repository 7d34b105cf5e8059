"""`xstilts cache list|prune` on real cache entries (PhaseCache/FeatureCache stores, no Ray)."""
from __future__ import annotations

import json
import os
import time

import pytest
from cloud_fixtures import s3_server  # noqa: F401

from xstilts.study.cli import main
from xstilts.trainables.phase_cache import IN_USE_TTL_S, PhaseCache, in_use

DAY = 86400


def _phase_entry(store, key: str, study: str, size: int, age_days: float, tmp_path) -> None:
    source = tmp_path / f"src-{key}"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"w" * size)
    PhaseCache(store / "phase_cache").store(key, source, {"trained_by_trial": "t", "study_name": study})
    when = time.time() - age_days * DAY
    for path in (store / "phase_cache" / key).rglob("*"):
        os.utime(path, (when, when))


def _feature_entry(store, key: str, size: int, age_days: float) -> None:
    folder = store / "feature_cache"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.npz").write_bytes(b"f" * size)
    when = time.time() - age_days * DAY
    os.utime(folder / f"{key}.npz", (when, when))


@pytest.fixture()
def store(tmp_path):
    store = tmp_path / "store"
    _phase_entry(store, "oldaaaa", "s1", 4000, 40, tmp_path)
    _phase_entry(store, "newbbbb", "s2", 3000, 1, tmp_path)
    _phase_entry(store, "midcccc", "s1", 2000, 10, tmp_path)
    _feature_entry(store, "feat1", 1000, 50)
    _feature_entry(store, "feat2", 500, 0)
    return store


def _run(capsys, *args) -> tuple[int, dict | str]:
    code = main(["cache", *args])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if "--json" in args and code == 0 else out.out + out.err)


def test_list_shows_every_entry(store, capsys):
    code, listing = _run(capsys, "list", "--storage-path", str(store), "--json")
    assert code == 0
    found = {(e["cache"], e["key"]): e for e in listing["entries"]}
    assert set(found) == {("phase", "oldaaaa"), ("phase", "newbbbb"), ("phase", "midcccc"),
                          ("feature", "feat1"), ("feature", "feat2")}
    assert found[("phase", "oldaaaa")]["study"] == "s1" and found[("phase", "oldaaaa")]["size"] > 4000  # + manifest
    assert 39 < (time.time() - found[("phase", "oldaaaa")]["last_used"]) / DAY < 41
    code, text = _run(capsys, "list", "--storage-path", str(store))
    assert code == 0 and "5 entries" in text and "study s2" in text


def test_prune_by_age_size_and_study(store, capsys):
    code, result = _run(capsys, "prune", "--storage-path", str(store), "--older-than", "30d", "--dry-run", "--json")
    assert code == 0 and {e["key"] for e in result["removed"]} == {"oldaaaa", "feat1"}
    assert (store / "phase_cache" / "oldaaaa").exists()  # a dry run removes nothing

    code, result = _run(capsys, "prune", "--storage-path", str(store), "--study", "s1", "--json")
    assert {e["key"] for e in result["removed"]} == {"oldaaaa", "midcccc"}
    assert not (store / "phase_cache" / "oldaaaa").exists() and (store / "phase_cache" / "newbbbb").exists()

    # Within 3.2 KB: the most recently used entries stay (feat2 0.5 KB, newbbbb ~3 KB), feat1 goes.
    code, result = _run(capsys, "prune", "--storage-path", str(store), "--max-size", "3.8K", "--json")
    assert {e["key"] for e in result["removed"]} == {"feat1"}
    assert sorted(os.listdir(store / "feature_cache")) == ["feat2.npz"]


def test_prune_never_removes_what_a_running_study_holds(store, capsys):
    from filelock import FileLock

    cache = PhaseCache(store / "phase_cache")
    lock = FileLock(str(store / "phase_cache" / "midcccc.lock"))  # a builder holds its lease
    with in_use(cache, "oldaaaa", "trial_1"), lock:
        code, result = _run(capsys, "prune", "--storage-path", str(store), "--older-than", "1h", "--json")
        assert code == 0
        assert {e["key"] for e in result["removed"]} == {"feat1", "newbbbb"}  # the others are held
        assert {e["key"] for e in result["kept_in_use"]} == {"oldaaaa", "midcccc"}
    # The trial ended: its marker says when the entry was last used (now), so it is recent.
    code, result = _run(capsys, "prune", "--storage-path", str(store), "--older-than", "1h", "--json")
    assert {e["key"] for e in result["removed"]} == {"midcccc"}
    assert (store / "phase_cache" / "oldaaaa").exists()


def test_a_stale_in_use_marker_does_not_protect(store, capsys):
    marker = store / "phase_cache" / ".in_use" / "oldaaaa" / "dead_trial.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"holder": "dead_trial", "active": True}))
    stale = time.time() - IN_USE_TTL_S - 60  # its trial died without closing it
    os.utime(marker, (stale, stale))
    code, listing = _run(capsys, "list", "--storage-path", str(store), "--json")
    assert [e["in_use"] for e in listing["entries"] if e["key"] == "oldaaaa"] == [[]]  # not in use any more
    code, result = _run(capsys, "prune", "--storage-path", str(store), "--older-than", "30d", "--json")
    assert "oldaaaa" not in {e["key"] for e in result["removed"]}  # its marker still dates its last use
    os.utime(marker, (time.time() - 35 * DAY,) * 2)
    code, result = _run(capsys, "prune", "--storage-path", str(store), "--older-than", "30d", "--json")
    assert "oldaaaa" in {e["key"] for e in result["removed"]}
    assert not (store / "phase_cache" / ".in_use" / "oldaaaa").exists()


@pytest.mark.parametrize("args, field", [
    (["prune"], "--older-than"),
    (["prune", "--older-than", "soon"], "--older-than"),
    (["prune", "--max-size", "lots"], "--max-size"),
])
def test_bad_prune_arguments_are_one_line_and_exit_2(store, capsys, args, field):
    code, text = _run(capsys, *args, "--storage-path", str(store))
    assert code == 2 and text.count("\n") == 1 and field in text, text
    assert (store / "phase_cache" / "oldaaaa").exists()


def test_prune_on_an_object_store(tmp_path, s3_server, capsys, monkeypatch):  # noqa: F811
    """The same on an S3 storage path (a real SeaweedFS server)."""
    from xstilts.storage import Location

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    storage = f"s3://{s3_server.bucket}/cache-admin"
    source = tmp_path / "enc"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"w" * 100)
    cache = PhaseCache(f"{storage}/phase_cache")
    cache.store("remotekey", source, {"study_name": "s3study"})
    with in_use(cache, "remotekey", "trial_9"):
        code, result = _run(capsys, "prune", "--storage-path", storage, "--study", "s3study", "--json")
        assert code == 0 and not result["removed"]
    code, result = _run(capsys, "prune", "--storage-path", storage, "--study", "s3study", "--json")
    assert [e["key"] for e in result["removed"]] == ["remotekey"]
    assert not Location(f"{storage}/phase_cache/remotekey").files()
