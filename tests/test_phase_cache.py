"""The content-addressed phase-2 cache: hits, misses, real multi-process races, corruption,
interrupted writes, and the key (what determines a phase-2 result, and only that)."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from xstilts.trainables.config import ResourceOptions, TrainingOptions, TrialConfig
from xstilts.trainables.phase_cache import MANIFEST, PhaseCache, cache_key
from xstilts.trainables.trial import intermediate_cache_fields


def _fake_encoder(folder: Path, content: str = "weights") -> Path:
    """What phase 2 leaves: a folder of model files (nested, binary and text)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 64}))
    (folder / "model.safetensors").write_bytes(content.encode() * 1000 + bytes(range(256)))
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "tokenizer.json").write_text("{}")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


# --- hit and miss -------------------------------------------------------------------------

def test_miss_then_store_then_hit(tmp_path):
    cache = PhaseCache(tmp_path / "cache")
    key = cache_key({"model": "m", "intermediate_task": "t"})
    assert cache.lookup(key) is None
    source = _fake_encoder(tmp_path / "trained")
    manifest = cache.store(key, source, {"trained_by_trial": "t1", "metrics": {"intermediate/epoch": 2}})
    assert manifest["key"] == key and manifest["metadata"]["trained_by_trial"] == "t1"
    assert set(manifest["checksums"]) == {"config.json", "model.safetensors", os.path.join("sub", "tokenizer.json")}
    again = cache.lookup(key)
    assert again == manifest
    assert _files(cache.entry(key)) == _files(source)
    assert cache.lookup(cache_key({"model": "m", "intermediate_task": "other"})) is None
    assert not cache.staging_folders(key)


def test_get_or_build_builds_once_then_hits(tmp_path):
    cache = PhaseCache(tmp_path / "cache")
    calls = []

    def build(store):
        calls.append(1)
        return store(_fake_encoder(tmp_path / f"trained{len(calls)}"), {"n": len(calls)})

    first, hit1 = cache.get_or_build("k1", build)
    second, hit2 = cache.get_or_build("k1", build)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert first == second and first["metadata"] == {"n": 1}


def test_get_or_build_failure_leaves_no_entry(tmp_path):
    cache = PhaseCache(tmp_path / "cache")

    def failing(store):
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        cache.get_or_build("k1", failing)
    assert cache.lookup("k1") is None and not cache.entry("k1").exists()
    with pytest.raises(RuntimeError, match="without calling store"):
        cache.get_or_build("k1", lambda store: None)
    # the next trial trains it
    manifest, hit = cache.get_or_build("k1", lambda store: store(_fake_encoder(tmp_path / "t"), {}))
    assert not hit and cache.lookup("k1") == manifest


# --- real processes racing for one key ----------------------------------------------------

def _contender(root: str, key: str, index: int, results: str, barrier) -> None:
    """One trial: wait until every process is up, then get the entry (training ~1.5 s on a miss)."""
    cache = PhaseCache(Path(root))
    barrier.wait(timeout=60)

    def build(store):
        time.sleep(1.5)  # "training": long enough that the other processes ask while it runs
        out = _fake_encoder(Path(root).parent / f"trained-{index}", content=f"by-{index}")
        manifest = store(out, {"trained_by": index})
        Path(results, "stored_at").write_text(str(time.time()))
        return manifest

    asked = time.time()
    manifest, hit = cache.get_or_build(key, build)
    record = {"index": index, "pid": os.getpid(), "hit": hit, "trained_by": manifest["metadata"]["trained_by"],
              "asked": asked, "got": time.time()}
    with open(Path(results) / f"{index}.json", "w") as out:
        json.dump(record, out)


@pytest.mark.parametrize("processes", [4])
def test_concurrent_processes_train_once_and_the_others_hit(tmp_path, processes):
    root, results = tmp_path / "cache", tmp_path / "results"
    results.mkdir()
    key = cache_key({"model": "m", "intermediate_task": "synthetic_mnli", "learning_rate": 1e-3})
    context = multiprocessing.get_context("fork")  # separate processes, each with its own lock handle
    barrier = context.Barrier(processes)  # all ask at the same moment
    workers = [context.Process(target=_contender, args=(str(root), key, i, str(results), barrier))
               for i in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    assert len(records) == processes and len({r["pid"] for r in records}) == processes
    trainers = [r for r in records if not r["hit"]]
    assert len(trainers) == 1  # exactly one trained...
    winner = trainers[0]["index"]
    assert all(r["trained_by"] == winner for r in records)  # ...and every other process got its entry
    stored_at = float((results / "stored_at").read_text())
    waiting = [r for r in records if r["hit"] and r["asked"] < stored_at]
    assert waiting, "no process asked while the entry was being trained: the race was not exercised"
    assert all(r["got"] >= stored_at for r in waiting)  # they waited for the entry, then hit it
    assert PhaseCache(root).lookup(key)["metadata"] == {"trained_by": winner}
    assert not PhaseCache(root).staging_folders(key)


# --- corruption and interrupted writes ----------------------------------------------------

def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["model.safetensors", os.path.join("sub", "tokenizer.json"), MANIFEST])
def test_a_flipped_byte_is_detected_and_the_entry_rebuilt(tmp_path, victim):
    cache = PhaseCache(tmp_path / "cache")
    original = cache.store("k1", _fake_encoder(tmp_path / "trained"), {"n": 1})
    target = cache.entry("k1") / victim
    _flip_byte(target, len(target.read_bytes()) // 2)
    assert cache.lookup("k1") is None  # detected...
    assert not cache.entry("k1").exists()  # ...and removed, so nobody loads it
    calls = []
    manifest, hit = cache.get_or_build("k1", lambda store: calls.append(1) or store(_fake_encoder(tmp_path / "again"), {"n": 2}))
    assert not hit and calls == [1] and manifest["checksums"] == original["checksums"]
    assert cache.lookup("k1")["metadata"] == {"n": 2}


def test_missing_or_extra_file_is_corruption(tmp_path):
    cache = PhaseCache(tmp_path / "cache")
    cache.store("k1", _fake_encoder(tmp_path / "trained"), {})
    (cache.entry("k1") / "config.json").unlink()
    assert cache.lookup("k1") is None
    cache.store("k2", _fake_encoder(tmp_path / "trained"), {})
    (cache.entry("k2") / "stray.bin").write_bytes(b"x")
    assert cache.lookup("k2") is None
    cache.store("k3", _fake_encoder(tmp_path / "trained"), {})
    manifest = json.loads((cache.entry("k3") / MANIFEST).read_text())
    (cache.entry("k3") / MANIFEST).write_text(json.dumps({**manifest, "key": "another-key"}))
    assert cache.lookup("k3") is None


def test_a_half_written_staging_folder_is_ignored_and_cleaned(tmp_path):
    cache = PhaseCache(tmp_path / "cache")
    # A writer died mid-copy: a staging folder with part of the files and no manifest.
    staging = tmp_path / "cache" / ".k1.staging-dead1234"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"half")
    other = tmp_path / "cache" / ".k2.staging-live5678"  # another key's write: not ours to touch
    other.mkdir()
    assert cache.lookup("k1") is None  # ignored: never mistaken for an entry
    assert cache.staging_folders("k1") == [staging]
    manifest, hit = cache.get_or_build("k1", lambda store: store(_fake_encoder(tmp_path / "trained"), {}))
    assert not hit and cache.lookup("k1") == manifest
    assert not staging.exists() and other.exists()  # cleaned under k1's lock; k2's left alone
    assert "model.safetensors" in manifest["checksums"]
    assert _files(cache.entry("k1"))["model.safetensors"] != b"half"


def test_an_entry_folder_without_manifest_is_removed(tmp_path):
    cache = PhaseCache(tmp_path / "cache")
    _fake_encoder(cache.entry("k1"))  # e.g. written in place by an old, non-atomic version
    assert cache.lookup("k1") is None and not cache.entry("k1").exists()


def test_store_replaces_an_existing_entry(tmp_path):
    cache = PhaseCache(tmp_path / "cache")
    cache.store("k1", _fake_encoder(tmp_path / "a", "aaa"), {"v": 1})
    cache.store("k1", _fake_encoder(tmp_path / "b", "bbb"), {"v": 2})
    assert cache.lookup("k1")["metadata"] == {"v": 2}
    assert _files(cache.entry("k1")) == _files(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["k1"]


# --- the key ------------------------------------------------------------------------------

BASE = TrialConfig(
    study_name="s", target_task="synthetic_xnli", intermediate_task="synthetic_mnli", intermediate_lr=1e-3,
    target_lr=3e-4, model_path="/models/tiny", seed=0, storage_path="/runs", phase_cache_dir="/runs/phase_cache",
    mlflow_tracking_uri="sqlite:///x.db", mlflow_experiment_id="1", mlflow_parent_run_id="p",
    training=TrainingOptions(), resources=ResourceOptions(), data_dir=None,
)


def _key(trial: TrialConfig) -> str:
    return cache_key(intermediate_cache_fields(trial))


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if value is None:
        return 7
    return f"{value}-other"


def test_key_is_stable_and_a_short_hex_string():
    assert _key(BASE) == _key(dataclasses.replace(BASE))
    assert len(_key(BASE)) == 20 and int(_key(BASE), 16) >= 0
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})  # field order does not matter


@pytest.mark.parametrize("name,value", [
    ("model_path", "/models/other"), ("intermediate_task", "synthetic_qqp"), ("intermediate_lr", 3e-4),
    ("seed", 1), ("data_dir", "/data/xtreme"), ("data_files", {"mnli:train": "mnli/other.tsv"}),
])
def test_key_changes_with_each_trial_field_of_phase_2(name, value):
    assert _key(dataclasses.replace(BASE, **{name: value})) != _key(BASE)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(TrainingOptions)
                                  if f.name not in ("target_epochs", "max_train_examples_by_task",
                                                    "max_eval_examples_by_task")])
def test_key_changes_with_each_training_option_of_phase_2(name):
    training = dataclasses.replace(BASE.training, **{name: _changed(getattr(BASE.training, name))})
    assert _key(dataclasses.replace(BASE, training=training)) != _key(BASE)


def test_key_changes_with_the_number_of_workers():
    # DDP over N workers means N x batch_size examples per step: a different phase 2.
    resources = dataclasses.replace(BASE.resources, num_workers=2)
    assert _key(dataclasses.replace(BASE, resources=resources)) != _key(BASE)


@pytest.mark.parametrize("change", [
    {"target_task": "synthetic_panx"}, {"target_lr": 1e-5}, {"study_name": "another-study"},
    {"storage_path": "/elsewhere"}, {"phase_cache_dir": "/elsewhere/cache"}, {"mlflow_tracking_uri": "http://h:5000"},
    {"mlflow_experiment_id": "9"}, {"mlflow_parent_run_id": "q"},
    {"training": dataclasses.replace(TrainingOptions(), target_epochs=10)},
    {"resources": dataclasses.replace(ResourceOptions(), max_failures=5, cpus_per_worker=2.0)},
], ids=lambda c: next(iter(c)))
def test_key_does_not_change_with_phase_3_or_bookkeeping_fields(change):
    assert _key(dataclasses.replace(BASE, **change)) == _key(BASE)


def test_every_determining_field_is_covered():
    """If intermediate_cache_fields grows a field, this test names it so a case gets added."""
    fields = intermediate_cache_fields(BASE)
    assert set(fields) == {"model", "intermediate_task", "learning_rate", "seed", "data_dir", "data_files", "epochs", "training",
                           "num_workers"}
    assert set(fields["training"]) == {f.name for f in dataclasses.fields(TrainingOptions)} - {
        "target_epochs", "max_train_examples_by_task", "max_eval_examples_by_task"}
    epochs = dataclasses.replace(BASE, training=dataclasses.replace(BASE.training, intermediate_epochs=5))
    assert _key(epochs) != _key(BASE)


def test_key_changes_with_the_per_task_cap_of_a_phase_2_task_only():
    def capped(**caps):
        return dataclasses.replace(BASE, training=dataclasses.replace(BASE.training, max_train_examples_by_task=caps))

    assert _key(capped(synthetic_mnli=100)) != _key(BASE)  # phase 2 trains on synthetic_mnli
    assert _key(capped(synthetic_mnli=100)) != _key(capped(synthetic_mnli=200))
    # A target's own cap (or any other task's) leaves the intermediate encoder, and its cache entry, as is.
    assert _key(capped(synthetic_xnli=100, pawsx=1800)) == _key(BASE)
    assert _key(capped()) == _key(BASE)


def test_key_changes_with_the_evaluation_cap_of_a_phase_2_task_only():
    def capped(**caps):
        return dataclasses.replace(BASE, training=dataclasses.replace(BASE.training, max_eval_examples_by_task=caps))

    # phase 2's dev scores (and early stopping on them) follow synthetic_mnli's evaluation cap
    assert _key(capped(synthetic_mnli=100)) != _key(BASE)
    assert _key(capped(synthetic_mnli=100)) != _key(capped(synthetic_mnli=200))
    # a retrieval target's larger evaluation (BUCC) keeps every phase-2 cache entry a hit
    assert _key(capped(bucc2018=2000, synthetic_xnli=50)) == _key(BASE)


def test_only_the_lease_holder_repairs(tmp_path):
    """A reader without the lease must not remove a partial or corrupt entry: on an object store
    "partial" is also what an entry looks like while its lease holder uploads it."""
    cache = PhaseCache(tmp_path / "cache")
    _fake_encoder(cache.entry("k1"))  # files, no manifest yet
    assert cache.lookup("k1", repair=False) is None and cache.entry("k1").exists()
    assert cache.fetch("k1", repair=False) is None and cache.entry("k1").exists()
    events = []
    cache.on_event = events.append
    manifest, hit = cache.get_or_build("k1", lambda store: store(_fake_encoder(tmp_path / "trained"), {"n": 1}))
    assert not hit and manifest["metadata"] == {"n": 1}
    assert len(events) == 1 and "partial" in events[0]  # repaired under the lease, and reported
