"""The tokenized-dataset cache: a cached load equals a fresh encode, hits and misses follow the
key, concurrent encoders encode once, corrupt entries are rebuilt, odd feature shapes survive."""
from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from xstilts.tasks import DataOptions, get_task
from xstilts.tasks.modeling import encode
from xstilts.trainables.feature_cache import (FeatureCache, cached_encode, feature_key, feature_key_fields,
                                      tokenizer_fingerprint)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    from xstilts.trainables.embedded_model import EmbeddedModelSpec, ensure_embedded_model

    # The tokenizer is what matters here; no MLM steps, so it builds in seconds.
    return ensure_embedded_model(tmp_path_factory.mktemp("models"), EmbeddedModelSpec(mlm_steps=0), log=lambda *a: None)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


OPTIONS = DataOptions(None, 300, 0)


@pytest.mark.parametrize("task_name", ["synthetic_xnli", "synthetic_panx", "synthetic_qqp"])
@pytest.mark.parametrize("split,language", [("train", "en"), ("dev", "en")])
def test_cached_load_equals_fresh_encode(tmp_path, tokenizer, model_dir, task_name, split, language):
    task = get_task(task_name)
    fresh = encode(task, task.load(split, language, OPTIONS), tokenizer)
    first, hit1 = cached_encode(tmp_path, task, split, language, OPTIONS, tokenizer, model_dir, None)
    second, hit2 = cached_encode(tmp_path, task, split, language, OPTIONS, tokenizer, model_dir, None)
    assert (hit1, hit2) == (False, True)
    assert first == fresh and second == fresh  # dataclass equality: every id and label
    assert type(second[0]) is type(fresh[0]) and type(second[0].input_ids) is list
    assert all(type(i) is int for f in second[:20] for i in f.input_ids)


def test_zero_shot_languages_are_cached_separately(tmp_path, tokenizer, model_dir):
    task = get_task("synthetic_xnli")
    for language in task.languages:
        features, hit = cached_encode(tmp_path, task, "dev", language, OPTIONS, tokenizer, model_dir, None)
        assert hit is False and features == encode(task, task.load("dev", language, OPTIONS), tokenizer)
    assert len(list(tmp_path.glob("*.npz"))) == len(task.languages)


def test_a_hit_never_loads_the_examples(tmp_path, tokenizer, model_dir):
    task = get_task("synthetic_mnli")
    loads = []

    def examples():
        loads.append(1)
        return task.load("train", "en", OPTIONS)

    cached_encode(tmp_path, task, "train", "en", OPTIONS, tokenizer, model_dir, None, examples)
    features, hit = cached_encode(tmp_path, task, "train", "en", OPTIONS, tokenizer, model_dir, None, examples)
    assert hit is True and loads == [1] and len(features) == 300


def test_without_a_cache_dir_it_is_a_plain_encode(tokenizer, model_dir):
    task = get_task("synthetic_xnli")
    features, hit = cached_encode(None, task, "train", "en", OPTIONS, tokenizer, model_dir, None)
    assert hit is None and features == encode(task, task.load("train", "en", OPTIONS), tokenizer)


def _fields(task_name="synthetic_xnli", split="train", language="en", tokenizer_hash="tok", max_length=None,
            options=OPTIONS):
    return feature_key_fields(get_task(task_name), split, language, tokenizer_hash, max_length, options)


@pytest.mark.parametrize("change", [
    {"task_name": "synthetic_panx"}, {"split": "dev"}, {"language": "near"}, {"tokenizer_hash": "other-tokenizer"},
    {"max_length": 32}, {"options": DataOptions(None, 301, 0)}, {"options": DataOptions(None, 300, 1)},
    {"options": DataOptions("/data", 300, 0)},
], ids=lambda c: next(iter(c)) + "=" + str(next(iter(c.values()))))
def test_key_changes_with_every_determining_field(change):
    assert feature_key(_fields(**change)) != feature_key(_fields())


def test_key_resolves_the_default_max_length():
    # None means the task's own max_length (64 for the synthetic tasks): the same features.
    assert feature_key(_fields(max_length=None)) == feature_key(_fields(max_length=get_task("synthetic_xnli").max_length))
    assert feature_key(_fields()) == feature_key(_fields())


def test_key_follows_the_data_folder_content(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-en.tsv").write_text("a\tb\n")
    options = DataOptions(str(data), None, 0)
    before = feature_key(_fields(options=options))
    (data / "train-en.tsv").write_text("a\tb\nc\td\n")  # the data changed: new size
    assert feature_key(_fields(options=options)) != before


def test_tokenizer_fingerprint_follows_the_tokenizer_files(tmp_path, tokenizer, model_dir):
    import shutil

    copy = tmp_path / "tok"
    shutil.copytree(model_dir, copy)
    assert tokenizer_fingerprint(copy) == tokenizer_fingerprint(model_dir)  # content, not path
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["model_max_length"] = 77
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    assert tokenizer_fingerprint(copy) != tokenizer_fingerprint(model_dir)
    # a hub name (no local folder): the loaded tokenizer itself is fingerprinted
    assert tokenizer_fingerprint("some/hub-name", tokenizer) == tokenizer_fingerprint("other/name", tokenizer)
    with pytest.raises(ValueError):
        tokenizer_fingerprint("some/hub-name")


def test_a_changed_tokenizer_is_a_miss(tmp_path, tokenizer, model_dir):
    import shutil

    task = get_task("synthetic_xnli")
    cached_encode(tmp_path / "cache", task, "train", "en", OPTIONS, tokenizer, model_dir, None)
    copy = tmp_path / "tok"
    shutil.copytree(model_dir, copy)
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text().replace("}", ', "x": 1}', 1))
    _, hit = cached_encode(tmp_path / "cache", task, "train", "en", OPTIONS, tokenizer, str(copy), None)
    assert hit is False


@pytest.mark.parametrize("where", [0.5, 0.9])
def test_a_corrupt_entry_is_rebuilt(tmp_path, tokenizer, model_dir, where):
    task = get_task("synthetic_panx")
    fresh, _ = cached_encode(tmp_path, task, "train", "en", OPTIONS, tokenizer, model_dir, None)
    [entry] = tmp_path.glob("*.npz")
    data = bytearray(entry.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    entry.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="unreadable"):
        features, hit = cached_encode(tmp_path, task, "train", "en", OPTIONS, tokenizer, model_dir, None)
    assert hit is False and features == fresh
    assert cached_encode(tmp_path, task, "train", "en", OPTIONS, tokenizer, model_dir, None) == (fresh, True)


def test_a_truncated_entry_is_rebuilt(tmp_path, tokenizer, model_dir):
    task = get_task("synthetic_xnli")
    fresh, _ = cached_encode(tmp_path, task, "train", "en", OPTIONS, tokenizer, model_dir, None)
    [entry] = tmp_path.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    with pytest.warns(UserWarning):
        features, hit = cached_encode(tmp_path, task, "train", "en", OPTIONS, tokenizer, model_dir, None)
    assert hit is False and features == fresh


def test_store_is_atomic_no_temporary_files_left(tmp_path, tokenizer, model_dir):
    task = get_task("synthetic_xnli")
    cached_encode(tmp_path, task, "train", "en", OPTIONS, tokenizer, model_dir, None)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].endswith(".lock") and names[1].endswith(".npz")
    assert not list(tmp_path.glob(".*"))


# --- other feature shapes (the heads other task kinds add) ----------------------------------

@dataclass
class _ChoiceFeatures:
    input_ids: list  # one id list per choice
    labels: int
    offsets: list
    example_id: str  # a QA window's context: the same string for all windows of an example
    extra: None = None


@dataclass
class _TupleFeatures:
    input_ids: tuple
    labels: int


def test_other_dataclass_shapes_round_trip(tmp_path):
    # one id list per choice (multiple choice), offsets with None for non-context tokens and a
    # shared context string (extractive QA windows), a None field
    context = "Der Rhein fliesst durch Basel. " * 20
    features = [_ChoiceFeatures([[0, 5, 2], [0, 6, 7, 2], []], i % 4, [None, [0, 3], None, [4, 9]] if i % 2 else [],
                                context if i < 30 else f"q{i}") for i in range(50)]
    cache = FeatureCache(tmp_path)
    loaded, hit = cache.get_or_encode("k", lambda: features)
    assert hit is False and cache.load("k") == features
    again = cache.load("k")
    assert again[0].example_id is again[1].example_id  # one string per distinct value, as in encode
    tuples = [_TupleFeatures((0, i, 2), i) for i in range(10)]
    assert cache.store("t", tuples) and cache.load("t") == tuples and type(cache.load("t")[0].input_ids) is tuple


def test_unstorable_features_are_returned_uncached(tmp_path):
    cache = FeatureCache(tmp_path)
    plain = [{"input_ids": [0, 2]}]  # not a dataclass
    assert cache.get_or_encode("k", lambda: plain) == (plain, None)
    floats = [_TupleFeatures(([0.5], (1, 2)), 1)]  # tuples inside lists would come back as lists
    assert cache.get_or_encode("f", lambda: floats) == (floats, None)
    assert not list(tmp_path.glob("*.npz"))


# --- concurrent encoders ------------------------------------------------------------------

def _encoder_process(root: str, index: int, results: str, barrier) -> None:
    cache = FeatureCache(Path(root))
    barrier.wait(timeout=60)

    def slow_encode():
        time.sleep(1.0)
        return [_TupleFeatures((0, index, 2), index)]

    features, hit = cache.get_or_encode("shared", slow_encode)
    Path(results, f"{index}.json").write_text(json.dumps({"hit": hit, "by": features[0].labels}))


def test_concurrent_processes_encode_once(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3)
    workers = [context.Process(target=_encoder_process, args=(str(tmp_path / "cache"), i, str(results), barrier))
               for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    records = [json.loads(p.read_text()) for p in results.glob("*.json")]
    assert sorted(r["hit"] for r in records) == [False, True, True]
    assert len({r["by"] for r in records}) == 1  # all read the one that was encoded


def test_encoder_fingerprint_covers_every_task_kind_module(monkeypatch):
    """Encoding lives in xstilts.tasks.kinds (one module per kind): editing any of them must change
    the feature-cache key, not only editing tasks/modeling.py."""
    import inspect

    import xstilts.tasks.kinds.tagging as tagging
    from xstilts.trainables.feature_cache import encoder_fingerprint

    before = encoder_fingerprint()
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda m: real(m) + ("# edited" if m is tagging else ""))
    assert encoder_fingerprint() != before
