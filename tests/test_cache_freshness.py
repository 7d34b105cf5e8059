"""The phase-2 and feature cache keys follow content, not paths (issue 14): different weights
re-saved into the same model folder, or a data file edited in place, are misses; an unchanged
folder keeps its key and is not read again (xstilts.trainables.fingerprint's memo)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xstilts.tasks import DataOptions, get_task
from xstilts.trainables import fingerprint
from xstilts.trainables.config import ResourceOptions, TrainingOptions, TrialConfig
from xstilts.trainables.feature_cache import feature_key, feature_key_fields
from xstilts.trainables.phase_cache import cache_key
from xstilts.trainables.trial import intermediate_cache_fields
from xstilts.storage import publish
from xstilts.storage.location import NODE_CACHE_ENV

BASE = TrialConfig(
    study_name="s", target_task="synthetic_xnli", intermediate_task="synthetic_mnli", intermediate_lr=1e-3,
    target_lr=3e-4, model_path="/models/tiny", seed=0, storage_path="/runs", phase_cache_dir="/runs/phase_cache",
    mlflow_tracking_uri="sqlite:///x.db", mlflow_experiment_id="1", mlflow_parent_run_id="p",
    training=TrainingOptions(), resources=ResourceOptions(), data_dir=None,
)


@pytest.fixture(autouse=True)
def node_cache(tmp_path, monkeypatch):
    """A fresh node cache (and so a fresh memo) per test."""
    folder = tmp_path / "node-cache"
    monkeypatch.setenv(NODE_CACHE_ENV, str(folder))
    return folder


def _key(**changes) -> str:
    return cache_key(intermediate_cache_fields(dataclasses.replace(BASE, **changes)))


def _hashed() -> int:
    return fingerprint.stats["hashed_files"]


def _save_tiny_model(folder: Path, seed: int) -> None:
    """A real save_pretrained folder of a tiny XLM-R; the seed decides the weights."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(seed)
    config = XLMRobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=40)
    XLMRobertaModel(config).save_pretrained(folder)


def _age(folder: Path, seconds: float = 3600) -> None:
    """Move every file's mtime into the past (as a copy with preserved times would)."""
    for path in folder.rglob("*"):
        if path.is_file():
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_different_weights_resaved_into_the_same_folder_change_the_key(tmp_path):
    model = tmp_path / "model"
    _save_tiny_model(model, seed=0)
    before = _key(model_path=str(model))
    sizes = {p.name: p.stat().st_size for p in model.iterdir()}
    _save_tiny_model(model, seed=1)  # same path, same file names and sizes, other weights
    assert {p.name: p.stat().st_size for p in model.iterdir()} == sizes
    assert _key(model_path=str(model)) != before
    _save_tiny_model(model, seed=0)  # the first weights again: the first key again
    assert _key(model_path=str(model)) == before


def test_resaved_weights_are_a_miss_even_with_the_old_mtime(tmp_path, monkeypatch):
    """A copy that preserves time stamps (cp -p, rsync -t) of other weights: still a miss (the
    memo also compares the change time and inode, which no copy can set back)."""
    import time

    monkeypatch.setattr(fingerprint, "RACY_SECONDS", 0.0)  # memoise even these young files
    model = tmp_path / "model"
    _save_tiny_model(model, seed=0)
    _age(model)
    stamps = {p.name: p.stat().st_mtime_ns for p in model.iterdir()}
    before = _key(model_path=str(model))
    start = _hashed()
    assert _key(model_path=str(model)) == before and _hashed() == start  # memoised
    time.sleep(0.05)  # past the file system's time-stamp tick
    _save_tiny_model(model, seed=1)
    for path in model.iterdir():
        os.utime(path, ns=(stamps[path.name], stamps[path.name]))
    assert _key(model_path=str(model)) != before


def test_an_unchanged_folder_keeps_its_key_and_is_not_read_again(tmp_path, monkeypatch):
    model = tmp_path / "model"
    _save_tiny_model(model, seed=0)
    _age(model)
    # Files whose change time is within RACY_SECONDS of hashing are not memoised (a second write
    # in the same clock tick would not show); _age() itself just set their ctime to now.
    monkeypatch.setattr(fingerprint, "RACY_SECONDS", 0.0)
    files = sum(1 for p in model.rglob("*") if p.is_file())
    start = _hashed()
    key = _key(model_path=str(model))
    assert _hashed() - start == files  # hashed once

    start = _hashed()
    assert _key(model_path=str(model)) == key
    assert _hashed() == start  # nothing read again

    # touched, content unchanged: the same key; only the touched file is read again
    touched = next(p for p in model.iterdir() if p.suffix == ".json")
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    start = _hashed()
    assert _key(model_path=str(model)) == key
    assert _hashed() - start == 1

    # the memo is on the node's disk: another process reads nothing either
    memo = json.loads(Path(fingerprint.memo_path()).read_text())
    assert str(model / "model.safetensors") in memo
    code = ("import dataclasses, sys; from trainables import fingerprint; "
            "print(fingerprint.content_fingerprint(sys.argv[1])); print(fingerprint.stats['hashed_files'])")
    out = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, check=True,
                         env={**os.environ}, cwd=Path(__file__).parent.parent).stdout.split()
    assert out == [fingerprint.content_fingerprint(str(model)), "0"]


def test_a_copy_of_the_same_files_elsewhere_is_the_same_content(tmp_path):
    import shutil

    model = tmp_path / "model"
    _save_tiny_model(model, seed=0)
    shutil.copytree(model, tmp_path / "copy")
    assert _key(model_path=str(tmp_path / "copy")) == _key(model_path=str(model))


def test_an_edited_data_file_changes_the_phase2_and_feature_keys(tmp_path):
    data = tmp_path / "data"
    (data / "mnli").mkdir(parents=True)
    train = data / "mnli" / "train.tsv"
    train.write_text("premise\thypothesis\tentailment\n")
    (data / "mnli" / "dev.tsv").write_text("p\th\tneutral\n")
    options = DataOptions(str(data), None, 0)

    def feature() -> str:
        return feature_key(feature_key_fields(get_task("synthetic_xnli"), "train", "en", "tok", None, options))

    phase2, features = _key(data_dir=str(data)), feature()
    assert _key(data_dir=str(data)) == phase2 and feature() == features  # stable
    stamp = train.stat().st_mtime_ns
    train.write_text("premise\thypothesis\tcontradiction\n"[:len(train.read_text())])  # same size
    os.utime(train, ns=(stamp, stamp))  # and the old mtime: only the content says it changed
    assert _key(data_dir=str(data)) != phase2
    assert feature() != features


def test_an_edited_data_files_override_changes_the_keys(tmp_path):
    data_file = tmp_path / "mnli-train.tsv"
    data_file.write_text("a\tb\tentailment\n")
    files = {"synthetic_mnli:train": str(data_file)}
    options = DataOptions(None, None, 0, files)

    def feature() -> str:
        return feature_key(feature_key_fields(get_task("synthetic_mnli"), "train", "en", "tok", None, options))

    phase2, features = _key(data_files=files), feature()
    assert _key(data_files=files) == phase2 and feature() == features
    data_file.write_text("a\tb\tneutral\n")
    assert _key(data_files=files) != phase2
    assert feature() != features
    # "{lang}" and globs name every matching file
    (tmp_path / "x-de.tsv").write_text("1")
    (tmp_path / "x-fr.tsv").write_text("2")
    pattern = {"synthetic_xnli:dev:{lang}": str(tmp_path / "x-{lang}.tsv")}
    before = _key(data_files=pattern)
    (tmp_path / "x-fr.tsv").write_text("3")
    assert _key(data_files=pattern) != before


def test_no_data_keeps_the_feature_key_fields_as_before():
    """Without data_dir or data_files the feature key has no new field: earlier entries stay hits."""
    fields = feature_key_fields(get_task("synthetic_xnli"), "train", "en", "tok", None, DataOptions(None, 300, 0))
    assert fields["data"] is None and "data_files" not in fields


def test_a_published_folder_is_keyed_by_its_manifest(tmp_path):
    source = tmp_path / "model"
    _save_tiny_model(source, seed=0)
    published = tmp_path / "bucket" / "model"
    publish(source, str(published))
    first = fingerprint.remote_fingerprint(str(published))
    assert first.startswith("manifest:") and fingerprint.remote_fingerprint(str(published)) == first
    _save_tiny_model(source, seed=1)
    publish(source, str(published))
    assert fingerprint.remote_fingerprint(str(published)) != first


def test_a_hub_name_is_keyed_by_the_cached_revision(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert fingerprint.content_fingerprint("org/some-model") == "hub:org/some-model"  # not cached: the name
    refs = tmp_path / "hub" / "models--org--some-model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("abc123\n")
    assert fingerprint.content_fingerprint("org/some-model") == "hub:org/some-model@abc123"
    before = _key(model_path="org/some-model")
    (refs / "main").write_text("def456\n")  # the hub cache moved to a new revision
    assert _key(model_path="org/some-model") != before
