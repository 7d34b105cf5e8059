"""Tokenized datasets cached on disk and shared by every trial (and every node) of a storage path.

`xstilts.tasks.modeling.encode` turns a split's examples into token ids; with a real tokenizer on MNLI
(393k pairs) that is about a minute of CPU per phase, repeated by every trial that trains or
evaluates on the same data. The features depend only on what is in the key, so they are encoded
once and then read back in well under a second:

    key = hash(task (name, kind, labels, max_length), split, language, the tokenizer's files,
               the resolved max_length, DataOptions, the content of the data folder's files and of
               the files DataOptions.files names (xstilts.trainables.fingerprint: hashed once, then
               re-hashed only when a file's size or times change), the source of the module that
               defines `encode`, the format version)

An entry is one `<key>.npz` file (numpy arrays only: loading it never runs code) holding the
features column by column plus a JSON header with a SHA-256 of the arrays; it is written to a
temporary name and renamed into place, so a reader sees a whole entry or none. A file lock per
key makes concurrent trials (or DDP ranks) wait for the one that encodes instead of encoding the
same split twice. An entry that fails to load or to verify is deleted and encoded again.

Any dataclass whose fields hold ints, lists of ints, lists of (None or list of ints) (one id list
per choice; QA offsets), strings (stored once per distinct value) or other JSON values can be
stored, so new task kinds get cached without changes here; features of another shape are
returned uncached (`hit is None`).
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import importlib
import inspect
import io
import itertools
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from xstilts.storage import Location, node_cache_dir

FORMAT_VERSION = 1
_HEADER = "__header__"
_TOKENIZER_FILE_PREFIXES = ("tokenizer", "special_tokens_map", "added_tokens", "vocab", "merges",
                            "sentencepiece", "spiece", "bpe", "chat_template")


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# --- key ingredients ----------------------------------------------------------------------

_fingerprints: dict[tuple, str] = {}


def _file_stats(paths: Iterable[Path]) -> tuple:
    stats = []
    for path in paths:
        st = path.stat()
        stats.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(stats))


def tokenizer_fingerprint(tokenizer_path: str | os.PathLike | None, tokenizer=None) -> str:
    """SHA-256 of the tokenizer's files (a local folder), else of the loaded tokenizer itself."""
    folder = Path(tokenizer_path) if tokenizer_path else None
    if folder is not None and folder.is_dir():
        files = [p for p in folder.iterdir()
                 if p.is_file() and p.name.lower().startswith(_TOKENIZER_FILE_PREFIXES)]
        if files:
            stats = _file_stats(files)
            if stats not in _fingerprints:
                digest = hashlib.sha256()
                for path in sorted(files, key=lambda p: p.name):
                    digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
                _fingerprints[stats] = digest.hexdigest()
            return _fingerprints[stats]
    if tokenizer is None:
        raise ValueError(f"no tokenizer files in {tokenizer_path!r} and no tokenizer object to fingerprint")
    # A hub name: fingerprint what was loaded (its full serialisation when it is a fast tokenizer).
    parts = [type(tokenizer).__name__, json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str)]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        parts.append(backend.to_str())
    else:
        parts.append(json.dumps(tokenizer.get_vocab(), sort_keys=True))
    return _sha256("\0".join(parts))


def data_fingerprint(data_dir: str | None) -> str | None:
    """The content of every file under `data_dir` (xstilts.trainables.fingerprint: a SHA-256 over relative
    paths, sizes and content hashes; unchanged files are not read again), None without a folder."""
    if not data_dir or not os.path.isdir(data_dir):
        return None
    from xstilts.trainables.fingerprint import content_fingerprint

    return content_fingerprint(data_dir)


def encoder_fingerprint(encode_fn: Callable | None = None) -> str:
    """The source of the module that defines `encode` and, for ours, of every task-kind module it
    dispatches to (xstilts.tasks.kinds: each kind encodes its own examples): editing any of the
    encoding code invalidates."""
    if encode_fn is None:
        from xstilts.tasks.modeling import encode as encode_fn
    modules = [inspect.getmodule(encode_fn)]
    if getattr(modules[0], "__name__", "") == "xstilts.tasks.modeling":
        import pkgutil

        import xstilts.tasks.kinds as kinds

        modules += [kinds] + [importlib.import_module(f"{kinds.__name__}.{info.name}")
                              for info in sorted(pkgutil.iter_modules(kinds.__path__), key=lambda i: i.name)]
    sources = []
    for module in modules:
        try:
            sources.append(inspect.getsource(module))
        except (OSError, TypeError):
            sources.append(f"{getattr(module, '__name__', '?')}:{getattr(encode_fn, '__qualname__', '?')}")
    return _sha256("\n".join(sources))


def _data_files_field(options) -> dict:
    """{"data_files": content of the files DataOptions.files names}, or {} without overrides (so
    the keys of studies without them stay as they were)."""
    files = getattr(options, "files", None)
    if not files:
        return {}
    from xstilts.trainables.fingerprint import data_files_fingerprint

    return {"data_files": data_files_fingerprint(dict(files), getattr(options, "data_dir", None))}


def feature_key_fields(task, split: str, language: str, tokenizer_hash: str, max_length: int | None,
                       options, encode_fn: Callable | None = None) -> dict:
    """Everything that determines `encode(task, task.load(split, language, options), tokenizer, max_length)`."""
    return {
        "format": FORMAT_VERSION,
        "task": {"name": task.name, "kind": task.kind, "labels": list(task.labels), "max_length": task.max_length},
        "split": split, "language": language, "tokenizer": tokenizer_hash,
        "max_length": max_length or task.max_length,
        "options": dataclasses.asdict(options),
        "data": data_fingerprint(getattr(options, "data_dir", None)),
        **_data_files_field(options),
        "encoder": encoder_fingerprint(encode_fn),
    }


def feature_key(fields: dict) -> str:
    return _sha256(json.dumps(fields, sort_keys=True, default=str))[:24]


# --- (de)serialisation: features as columns of numpy arrays ---------------------------------

def _is_int(value) -> bool:
    return type(value) is int


def _to_arrays(features: list) -> tuple[dict[str, np.ndarray], dict] | None:
    """Columns of a list of dataclass instances, or None when they cannot be stored exactly."""
    if not features or not dataclasses.is_dataclass(features[0]):
        return None
    cls = type(features[0])
    if any(type(f) is not cls for f in features):
        return None
    arrays: dict[str, np.ndarray] = {}
    columns: dict[str, dict] = {}
    for index, field in enumerate(dataclasses.fields(cls)):
        values = [getattr(f, field.name) for f in features]
        name = f"c{index}"
        if all(_is_int(v) for v in values):
            arrays[name] = np.asarray(values, dtype=np.int64)
            columns[field.name] = {"kind": "int", "array": name}
        elif all(v is None for v in values):
            columns[field.name] = {"kind": "none"}
        elif all(type(v) in (list, tuple) for v in values) and len({type(v) for v in values}) == 1 \
                and set(map(type, itertools.chain.from_iterable(values))) <= {int}:
            lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
            flat = np.fromiter(itertools.chain.from_iterable(values), dtype=np.int64, count=int(lengths.sum()))
            arrays[name] = flat
            arrays[name + "_len"] = lengths
            columns[field.name] = {"kind": "ragged", "array": name, "container": type(values[0]).__name__}
        elif all(type(v) is str for v in values):  # e.g. a QA window's context: stored once per distinct string
            unique: dict[str, int] = {}
            index = np.fromiter((unique.setdefault(v, len(unique)) for v in values), dtype=np.int64, count=len(values))
            encoded = [u.encode("utf-8") for u in unique]
            arrays[name] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            arrays[name + "_len"] = np.asarray([len(e) for e in encoded], dtype=np.int64)
            arrays[name + "_idx"] = index
            columns[field.name] = {"kind": "str", "array": name}
        elif _nested_ints(values):  # one id list per choice; QA offsets ([start, end] or None per token)
            outer = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
            inner_items = list(itertools.chain.from_iterable(values))
            inner = np.fromiter((-1 if item is None else len(item) for item in inner_items), dtype=np.int64,
                                count=len(inner_items))
            flat = list(itertools.chain.from_iterable(item for item in inner_items if item is not None))
            arrays[name] = np.asarray(flat, dtype=np.int64)
            arrays[name + "_outer"] = outer
            arrays[name + "_inner"] = inner
            columns[field.name] = {"kind": "nested"}
            columns[field.name]["array"] = name
        else:  # anything else JSON can hold, stored only if it round-trips exactly
            try:
                text = json.dumps(values)
            except (TypeError, ValueError):
                return None
            if json.loads(text) != values:
                return None  # e.g. tuples (JSON gives lists back): not stored rather than changed
            arrays[name] = np.frombuffer(text.encode(), dtype=np.uint8)
            columns[field.name] = {"kind": "json", "array": name}
    header = {"class": f"{cls.__module__}:{cls.__qualname__}", "count": len(features), "columns": columns}
    return arrays, header


def _nested_ints(values: list) -> bool:
    """Lists of (None or a list of ints): what `nested` columns hold."""
    if not all(type(v) is list for v in values):
        return False
    items = list(itertools.chain.from_iterable(values))
    if not all(item is None or type(item) is list for item in items):
        return False
    return set(map(type, itertools.chain.from_iterable(i for i in items if i is not None))) <= {int}


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode() + b"\0" + np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def _from_arrays(arrays: dict[str, np.ndarray], header: dict) -> list:
    # Millions of small lists: the cyclic GC would scan them again and again while they are built
    # (5-10x slower); none of them can be part of a cycle.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_features(arrays, header)
    finally:
        if enabled:
            gc.enable()


def _build_features(arrays: dict[str, np.ndarray], header: dict) -> list:
    module, qualname = header["class"].split(":")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    fields = [f.name for f in dataclasses.fields(cls)]
    if fields != list(header["columns"]):
        raise ValueError(f"{header['class']} has fields {fields}, the entry {list(header['columns'])}")
    count = header["count"]
    columns = []
    for name, column in header["columns"].items():
        kind = column["kind"]
        if kind == "int":
            values = arrays[column["array"]].tolist()
        elif kind == "none":
            values = [None] * count
        elif kind == "ragged":
            flat = arrays[column["array"]].tolist()
            ends = np.cumsum(arrays[column["array"] + "_len"]).tolist()
            starts = [0] + ends[:-1]
            values = [flat[s:e] for s, e in zip(starts, ends)]
            if column["container"] == "tuple":
                values = [tuple(v) for v in values]
        elif kind == "str":
            blob = arrays[column["array"]].tobytes()
            ends = np.cumsum(arrays[column["array"] + "_len"]).tolist()
            unique = [blob[s:e].decode("utf-8") for s, e in zip([0] + ends[:-1], ends)]
            values = [unique[i] for i in arrays[column["array"] + "_idx"].tolist()]
        elif kind == "nested":
            flat = arrays[column["array"]].tolist()
            inner = arrays[column["array"] + "_inner"].tolist()
            items, position = [], 0
            for length in inner:
                if length < 0:
                    items.append(None)
                else:
                    items.append(flat[position:position + length])
                    position += length
            ends = np.cumsum(arrays[column["array"] + "_outer"]).tolist()
            values = [items[s:e] for s, e in zip([0] + ends[:-1], ends)]
        elif kind == "json":
            values = json.loads(arrays[column["array"]].tobytes().decode())
        else:
            raise ValueError(f"unknown column kind {kind!r}")
        if len(values) != count:
            raise ValueError(f"column {name} has {len(values)} values, expected {count}")
        columns.append(values)
    return [cls(*row) for row in zip(*columns)]


# --- the cache -----------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureCache:
    """Entries under any storage location (storage.Location): a local or mounted folder, or an
    object store. One entry is one object, written whole, so a reader never sees part of one.

    Concurrent encoders of one key wait for each other with a file lock: under the root on a
    local or mounted folder (every process sharing the folder), in this node's temporary cache
    for an object store (every process of the node). Two nodes may then encode the same split
    at the same moment; both write identical, complete objects, so that costs CPU, never
    correctness. (Serialising them through the phase cache's lease arbiter would add a Ray
    round trip to every split a trial reads, for a saving of seconds.)
    """

    root: str | os.PathLike

    def __post_init__(self):
        object.__setattr__(self, "location", Location(os.fspath(self.root)))
        if not self.location.remote:
            object.__setattr__(self, "root", Path(self.location.ref))

    def path(self, key: str) -> Path:
        """The entry's local file (local roots only)."""
        return Path(self.location.ref) / f"{key}.npz"

    def _entry(self, key: str) -> Location:
        return self.location.child(f"{key}.npz")

    def lock(self, key: str):
        from filelock import FileLock

        if self.location.remote:
            folder = Path(node_cache_dir()) / "feature-locks" / hashlib.sha256(self.location.ref.encode()).hexdigest()[:16]
        else:
            folder = Path(self.location.ref)
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / f"{key}.lock"))

    def load(self, key: str) -> list | None:
        """The cached features of `key`, or None (missing, or corrupt: then the entry is removed)."""
        entry = self._entry(key)
        try:
            data = entry.read_bytes()
        except FileNotFoundError:
            return None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            header = json.loads(arrays.pop(_HEADER).tobytes().decode())
            if header.get("key") != key or header.get("sha256") != _digest(arrays):
                raise ValueError("checksum mismatch")
            return _from_arrays(arrays, header)
        except Exception as error:  # noqa: BLE001 - any unreadable entry is rebuilt, never trusted
            warnings.warn(f"feature cache: entry {entry} is unreadable ({error}); encoding again")
            entry.delete()
            return None

    def store(self, key: str, features: list, metadata: dict | None = None) -> bool:
        """Write the features atomically; False when they are not of a storable shape."""
        converted = _to_arrays(features)
        if converted is None:
            return False
        arrays, header = converted
        header.update(key=key, sha256=_digest(arrays), metadata=metadata or {})
        arrays[_HEADER] = np.frombuffer(json.dumps(header, default=str).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self._entry(key).write_bytes(buffer.getvalue())
        return True

    def get_or_encode(self, key: str, encode: Callable[[], list], metadata: dict | None = None) -> tuple[list, bool | None]:
        """(features, hit): cached features, else `encode()` stored for the next caller.

        hit is True (read from storage), False (encoded and stored) or None (encoded, not storable).
        """
        features = self.load(key)
        if features is not None:
            return features, True
        with self.lock(key):  # a concurrent encoder of the same key finishes first; then we hit
            features = self.load(key)
            if features is not None:
                return features, True
            features = encode()
            return features, (False if self.store(key, features, metadata) else None)


def cached_encode(cache_dir: str | os.PathLike | None, task, split: str, language: str, options,
                  tokenizer, tokenizer_path: str | None, max_length: int | None,
                  examples: Callable[[], list] | list | None = None) -> tuple[list, bool | None]:
    """`encode(task, examples, tokenizer, max_length)` of one split and language, through the cache.

    `examples` may be a list or a function that loads it: with a function, a hit never loads
    the examples at all. Without `cache_dir` this is a plain encode (hit None).
    """
    from xstilts.tasks.modeling import encode

    def load_examples() -> list:
        if examples is None:
            return task.load(split, language, options)
        return examples() if callable(examples) else examples

    def run() -> list:
        return encode(task, load_examples(), tokenizer, max_length)

    if not cache_dir:
        return run(), None
    fields = feature_key_fields(task, split, language, tokenizer_fingerprint(tokenizer_path, tokenizer),
                                max_length, options, encode)
    cache = FeatureCache(cache_dir)
    return cache.get_or_encode(feature_key(fields), run, {"fields": fields})
