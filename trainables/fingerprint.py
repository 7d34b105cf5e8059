"""Content fingerprints of what a cached result depends on: model folders, data folders, data files.

The phase-2 cache key (`xstilts.trainables.trial.intermediate_cache_fields`) and the feature cache key
(`xstilts.trainables.feature_cache.feature_key_fields`) hold these instead of paths, so that re-saving
different weights into the same model folder, or editing a data file in place, is a miss and
never a stale hit. `content_fingerprint(ref)` is, by the kind of reference:

- a local folder: SHA-256 over (relative path, size, SHA-256 of the content) of every file below
  it (symlinked files are followed; their targets' content counts);
- a local file: the same over its one file (its base name as the relative path);
- a URI (`s3://...`, `gs://...`): the SHA-256 of the folder's manifest (`xstilts.storage.MANIFEST`,
  written by `xstilts.storage.publish`: the embedded model and phase-cache entries on an object
  store carry one, with every file's checksum), else of its file listing (names and sizes: an
  object store folder written without a manifest is followed by names and sizes only);
- anything else, an HF hub name (`xlm-roberta-large`): `hub:<name>@<revision>` where the revision
  is the commit the local HF cache resolves the name's `main` ref to (read from the cache's
  `refs/main` file: no network call, so it is safe offline), else the name itself. A hub model
  that is not in the local cache, or a cache that is updated later by an online download, is
  keyed by its name alone: a hub name is taken to stand for fixed weights.

Hashing is cheap on repeats: each file's hash is remembered in a memo keyed by (absolute path,
size, mtime_ns, ctime_ns, inode), kept in memory and in a small JSON file beside the node's
temporary cache (`xstilts.storage.node_cache_dir()/content-fingerprints.json`), so an unchanged
file is never read again, on this node, by any process. A file whose size or times change is
hashed in full. A file modified within `RACY_SECONDS` of being hashed is not remembered (its
time stamp may not show a second write in the same clock tick: git's "racy" rule), so it is
hashed again next time.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
import threading
import time

MEMO_FILE = "content-fingerprints.json"
RACY_SECONDS = 2.0  # a file younger than this (at hashing time) is not memoised
MEMO_MAX_ENTRIES = 50_000

# Counters for tests and diagnostics: files and bytes read to hash them in this process.
stats = {"hashed_files": 0, "hashed_bytes": 0}

_lock = threading.Lock()
_memo: dict[str, list] | None = None  # abs path -> [size, mtime_ns, ctime_ns, inode, sha256]
_memo_path: str | None = None


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
            size += len(block)
    stats["hashed_files"] += 1
    stats["hashed_bytes"] += size
    return digest.hexdigest()


def memo_path() -> str:
    from xstilts.storage import node_cache_dir

    return os.path.join(node_cache_dir(), MEMO_FILE)


def _load_memo() -> dict[str, list]:
    """The memo (from this process, else from the node's file); reloaded when the node cache moves."""
    global _memo, _memo_path
    path = memo_path()
    if _memo is None or _memo_path != path:
        _memo_path = path
        try:
            with open(path) as handle:
                loaded = json.load(handle)
            _memo = {k: v for k, v in loaded.items() if isinstance(v, list) and len(v) == 5} \
                if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            _memo = {}
    return _memo


def _save_memo(new: dict[str, list]) -> None:
    """Merge this process's new entries into the node's memo file (atomically; best effort: a
    memo that cannot be written only costs a re-hash)."""
    path = memo_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        from filelock import FileLock

        with FileLock(path + ".lock", timeout=30):
            try:
                with open(path) as handle:
                    merged = json.load(handle)
                if not isinstance(merged, dict):
                    merged = {}
            except (OSError, ValueError):
                merged = {}
            merged.update(new)
            if len(merged) > MEMO_MAX_ENTRIES:  # keep the newest entries (dicts keep insertion order)
                merged = dict(list(merged.items())[-MEMO_MAX_ENTRIES:])
            handle, temporary = tempfile.mkstemp(prefix=".fingerprints-", suffix=".tmp", dir=os.path.dirname(path))
            try:
                with os.fdopen(handle, "w") as out:
                    json.dump(merged, out)
                os.replace(temporary, path)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
    except Exception:  # noqa: BLE001 - the memo is an optimisation, never a reason to fail
        pass


def file_hash(path: str, _new: dict | None = None) -> str:
    """SHA-256 of a local file's content, through the memo."""
    path = os.path.abspath(path)
    st = os.stat(path)
    signature = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    with _lock:
        known = _load_memo().get(path)
    if known is not None and known[:4] == signature:
        return known[4]
    started = time.time_ns()
    digest = _sha256_file(path)
    after = os.stat(path)
    if [after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino] != signature:
        return digest  # changed while being read: not remembered
    if max(st.st_mtime_ns, st.st_ctime_ns) < started - int(RACY_SECONDS * 1e9):
        entry = signature + [digest]
        with _lock:
            _load_memo()[path] = entry
        if _new is not None:
            _new[path] = entry
        else:
            _save_memo({path: entry})
    return digest


def _local_files(root: str) -> list[tuple[str, str]]:
    """(relative path with "/", absolute path) of every file below a local folder, sorted."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            full = os.path.join(folder, name)
            if os.path.isfile(full):  # a dangling symlink or a socket holds no content
                found.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    return sorted(found)


def _digest_entries(entries: list[tuple[str, int, str]]) -> str:
    digest = hashlib.sha256()
    for relative, size, content in entries:
        digest.update(f"{relative}\0{size}\0{content}\n".encode())
    return digest.hexdigest()


def local_fingerprint(path: str) -> str:
    """SHA-256 over (relative path, size, content SHA-256) of a local file or every file of a folder."""
    path = os.path.abspath(os.path.expanduser(path))
    new: dict[str, list] = {}
    try:
        if os.path.isdir(path):
            files = _local_files(path)
        else:
            files = [(os.path.basename(path), path)]
        entries = [(relative, os.path.getsize(full), file_hash(full, new)) for relative, full in files]
    finally:
        if new:
            _save_memo(new)
    return _digest_entries(entries)


def remote_fingerprint(ref: str) -> str:
    """SHA-256 of a remote folder's manifest, else of its listing (names and sizes)."""
    from xstilts.storage import MANIFEST, Location

    location = Location(ref)
    try:
        return "manifest:" + hashlib.sha256(location.child(MANIFEST).read_bytes()).hexdigest()
    except FileNotFoundError:
        pass
    try:
        if location.is_file():
            return "object:" + hashlib.sha256(f"{location.name}\0{location.info().size}".encode()).hexdigest()
    except FileNotFoundError:
        pass
    listing = sorted(location.files().items())
    return "listing:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def hub_revision(name: str) -> str | None:
    """The commit the local HF hub cache resolves `name`'s main ref to, or None (read offline)."""
    try:
        from huggingface_hub import constants

        cache = constants.HF_HUB_CACHE
    except Exception:  # noqa: BLE001 - huggingface_hub missing or changed: no revision
        return None
    if not name or name.startswith(("/", ".")) or name.count("/") > 1:
        return None
    ref = os.path.join(cache, "models--" + name.replace("/", "--"), "refs", "main")
    try:
        with open(ref) as handle:
            revision = handle.read().strip()
    except OSError:
        return None
    return revision or None


def content_fingerprint(ref: str | os.PathLike | None) -> str | None:
    """A string that changes whenever the content behind `ref` changes (see the module docstring)."""
    if ref is None:
        return None
    ref = os.fspath(ref)
    from xstilts.storage import is_uri

    if is_uri(ref):
        return remote_fingerprint(ref)
    local = ref[len("file://"):] if ref.startswith("file://") else ref
    if os.path.exists(os.path.expanduser(local)):
        return "sha256:" + local_fingerprint(local)
    revision = hub_revision(ref)
    return f"hub:{ref}@{revision}" if revision else f"hub:{ref}"


def data_files_fingerprint(data_files: dict | None, data_dir: str | None = None) -> dict | None:
    """{key: fingerprint of the files a `DataOptions.files` entry can name}: its value resolved
    against `data_dir` (else the working directory), "{lang}" and glob patterns expanded."""
    if not data_files:
        return None
    result = {}
    for key, value in sorted(data_files.items()):
        value = str(value)
        base = data_dir if data_dir and not os.path.isabs(value) else ""
        pattern = os.path.join(base, value) if base else value
        pattern = os.path.expanduser(pattern).replace("{lang}", "*")
        if is_pattern(pattern):
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if matches:
                root = _pattern_root(pattern)
                entries = [(os.path.relpath(p, root), os.path.getsize(p), local_fingerprint(p)) for p in matches]
                result[key] = "sha256:" + _digest_entries(entries)
                continue
        elif os.path.exists(pattern):
            result[key] = content_fingerprint(pattern)
            continue
        result[key] = f"missing:{value}"
    return result


def is_pattern(path: str) -> bool:
    return any(c in path for c in "*?[")


def _pattern_root(pattern: str) -> str:
    """The folder above a glob pattern's first wildcard (matches are named relative to it)."""
    first = min(i for i in (pattern.find(c) for c in "*?[") if i >= 0)
    return os.path.dirname(pattern[:first]) or "."
