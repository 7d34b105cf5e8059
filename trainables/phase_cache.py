"""Content-addressed phase-2 checkpoints: each distinct intermediate training runs once per storage.

Many trials share the same phase 2 (same model, intermediate task, learning rate, seed, data and
training options); the cache key is a hash of exactly those fields, so every target task and
phase-3 learning rate reuses one encoder. The root is any storage location (`storage`): a local
or mounted folder, or an object store (`s3://bucket/prefix/phase_cache`). The guarantees are the
same on both:

- An entry is visible only once complete: its files first, then a manifest of SHA-256 checksums
  (and sizes) written last. A reader trusts only an entry whose manifest verifies; one that does
  not (a partial write, a flipped byte, a missing or extra file) is removed and rebuilt, and the
  rebuild is reported through `on_event`.
- One builder per key at a time, across processes and nodes: a *lease* on the key. On a local
  or mounted folder the lease is an fcntl file lock (`<key>.lock`; released by the kernel when
  its holder dies). Object stores have no locks and pyarrow exposes no conditional writes, so on
  a remote root the lease comes from a lease service every node can reach: the study's named
  Ray actor (`xstilts.trainables.leases`), a single-threaded arbiter. Its leases expire unless renewed,
  so a builder that died (node lost, trial killed) lets another trial take over after `ttl`.
- Waiting trials poll the manifest; when the builder publishes it they hit.

Local layout under the root:
    <key>/                      a complete entry (the files + MANIFEST)
    <key>.lock                  the per-key lease (file lock)
    .<key>.staging-XXXX/        a write in progress (renamed into place when complete); left
                                behind only by a writer that died, removed by the next writer
Object-store layout: `<key>/` (files, MANIFEST last), written in place: no rename exists there,
and the manifest-last rule is what makes the entry appear atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from xstilts.storage import MANIFEST, Location, StorageError, folder_checksums, local_copy, publish

POLL_SECONDS = 2.0


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _report(message: str) -> None:
    print(f"phase cache: {message}", flush=True)


@dataclass
class PhaseCache:
    root: str | os.PathLike
    # Leases for a remote root (xstilts.trainables.leases.LeaseClient or anything with its `hold`).
    leases: object | None = None
    on_event: Callable[[str], None] = field(default=_report)

    def __post_init__(self):
        self.location = Location(os.fspath(self.root))
        if not self.location.remote:
            self.root = Path(self.location.ref)

    @property
    def remote(self) -> bool:
        return self.location.remote

    def entry_ref(self, key: str) -> str:
        """Where the entry's folder is: a local path or a URI (what phase 3 starts from)."""
        return self.location.child(key).ref

    def entry(self, key: str) -> Path:
        """The entry's local folder (local roots only)."""
        if self.remote:
            raise ValueError(f"{self.location} is remote: use entry_ref() or fetch()")
        return Path(self.root) / key

    # --- leases --------------------------------------------------------------------------

    def lock(self, key: str):
        """The lease of a local root, blocking (a context manager)."""
        from filelock import FileLock

        Path(self.root).mkdir(parents=True, exist_ok=True)
        return FileLock(str(Path(self.root) / f"{key}.lock"))

    def _try_lease(self, key: str):
        """A context manager whose value says whether this process now holds the key's lease."""
        if self.remote:
            if self.leases is None:
                raise StorageError(f"phase cache {self.location} is remote and has no lease service",
                                   "run trials through `xstilts run` (it starts one), or pass leases=")
            return self.leases.hold(key)
        return _FileLease(self.lock(key))

    # --- staging (local roots) -------------------------------------------------------------

    def staging_folders(self, key: str) -> list[Path]:
        """Staging folders of `key` (writes in progress, or left by a writer that died)."""
        if self.remote or not Path(self.root).exists():
            return []
        return sorted(Path(self.root).glob(f".{key}.staging-*"))

    def clean_staging(self, key: str) -> int:
        """Remove the staging folders of `key`; call it holding its lease (then none is live)."""
        stale = self.staging_folders(key)
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
        return len(stale)

    # --- reading ---------------------------------------------------------------------------

    def _discard(self, key: str, why: str) -> None:
        self.on_event(f"entry {key} at {self.entry_ref(key)} is {why}: removed, it will be rebuilt")
        self.location.child(key).delete()

    def lookup(self, key: str, repair: bool = True) -> dict | None:
        """The entry's manifest if it is complete and intact; with `repair`, a corrupt or partial
        entry is removed (only its lease holder may repair: without the lease, "partial" may be
        an entry its holder is writing right now, so a waiting reader just sees no entry).

        Locally every file's checksum is verified; remotely the file list and sizes are (the
        checksums are verified where the files are read: `fetch`, and every node's `local_copy`).
        """
        folder = self.location.child(key)
        try:
            raw = folder.child(MANIFEST).read_bytes()
        except FileNotFoundError:
            if repair and folder.files():  # files without a manifest: a write that never finished
                self._discard(key, "partial (no manifest)")
            return None
        try:
            manifest = json.loads(raw)
            if manifest["key"] != key:
                raise ValueError("manifest of another key")
            if self.remote:
                sizes = {k: v for k, v in folder.files().items() if k != MANIFEST}
                intact = sizes == manifest["sizes"]
            else:
                intact = manifest["checksums"] == folder_checksums(self.entry(key))
        except (ValueError, KeyError, TypeError, OSError):
            intact = False
        if not intact:
            if repair:
                self._discard(key, "corrupt (its files do not match its manifest)")
            return None
        return manifest

    def fetch(self, key: str, repair: bool = True) -> str | None:
        """A verified local folder of the entry (for a local root, the entry itself), or None if
        the entry is missing or fails verification (then, with `repair`, it is removed)."""
        manifest = self.lookup(key, repair)
        if manifest is None:
            return None
        if not self.remote:
            return str(self.entry(key))
        try:
            return local_copy(self.entry_ref(key))
        except StorageError as error:
            if repair:
                self._discard(key, f"corrupt ({error.message})")
            return None

    # --- writing ---------------------------------------------------------------------------

    def store(self, key: str, source: Path, metadata: dict) -> dict:
        """Publish `source` as the entry of `key` and return its manifest (hold its lease)."""
        source = Path(source)
        if self.remote:  # a partial write of a builder that died, or a corrupt entry, is replaced
            return publish(source, self.entry_ref(key), {"key": key, "metadata": metadata})
        checksums = folder_checksums(source)
        sizes = {name: (source / name).stat().st_size for name in checksums}
        text = json.dumps({"key": key, "metadata": metadata, "checksums": checksums, "sizes": sizes},
                          indent=1, sort_keys=True, default=str)
        Path(self.root).mkdir(parents=True, exist_ok=True)
        self.clean_staging(key)  # left by a writer of this key that died mid-copy
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.staging-", dir=self.root))
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))
            (staging / MANIFEST).write_text(text)
            target = self.entry(key)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return json.loads(text)

    def get_or_build(self, key: str, build: Callable[[Callable[[Path, dict], dict]], object],
                     poll_seconds: float = POLL_SECONDS) -> tuple[dict, bool]:
        """The entry of `key`, built only if no intact entry exists: (manifest, hit).

        `build(store)` trains and calls `store(folder, metadata)` while its folder still exists
        (e.g. inside `checkpoint.as_directory()`). It runs at most once per key at a time
        across every process and node sharing the root: the others wait for the lease holder
        and then find the entry (a hit); if the holder dies, its lease lapses and one of them
        builds it.
        """
        while True:
            # Without the lease: look, never repair (the holder may be writing the entry now).
            manifest = self.lookup(key, repair=False)
            if manifest is not None and (not self.remote or self.fetch(key, repair=False) is not None):
                return manifest, True
            with self._try_lease(key) as held:
                if held:
                    manifest = self.lookup(key)  # published while we acquired the lease (or repaired)
                    if manifest is not None and (not self.remote or self.fetch(key) is not None):
                        return manifest, True
                    self.clean_staging(key)
                    stored: list[dict] = []

                    def store(source, metadata: dict) -> dict:
                        stored.append(self.store(key, Path(source), metadata))
                        return stored[-1]

                    build(store)
                    if not stored:
                        raise RuntimeError(f"phase cache {self.location}: the builder of {key} returned without calling store()")
                    return stored[-1], False
            time.sleep(poll_seconds)


# --- in-use markers: what `xstilts cache prune` never deletes ------------------------------------

IN_USE = ".in_use"  # <root>/.in_use/<key>/<holder>.json: who uses an entry, and when it last did
IN_USE_TTL_S = 300.0  # a marker not refreshed for this long belongs to a trial that died


def _marker(cache: "PhaseCache", key: str, holder: str) -> Location:
    return cache.location.child(IN_USE, key, f"{holder}.json")


def _write_marker(marker: Location, holder: str, active: bool) -> None:
    marker.write_bytes(json.dumps({"holder": holder, "active": active, "time": time.time()}).encode())


@contextmanager
def in_use(cache: "PhaseCache", key: str, holder: str, refresh_s: float = IN_USE_TTL_S / 4):
    """While the block runs, mark the entry of `key` as used by `holder` (a trial id): its marker
    is rewritten every `refresh_s` seconds, and left behind as inactive when the block ends (the
    entry's last use, what `cache prune --older-than` reads). A marker is a small file (local) or
    object (object store) beside the entries, so it works wherever the cache does."""
    import threading

    marker = _marker(cache, key, holder)
    _write_marker(marker, holder, True)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(refresh_s):
            try:
                _write_marker(marker, holder, True)
            except Exception:  # noqa: BLE001 - a missed refresh only shortens the protection
                pass

    thread = threading.Thread(target=refresh, name=f"in-use-{key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        try:
            _write_marker(marker, holder, False)
        except Exception:  # noqa: BLE001 - bookkeeping must not fail the trial
            pass


def usage(cache: "PhaseCache", key: str, now: float | None = None) -> tuple[list[str], float | None]:
    """(holders using the entry now, the time it was last used or None)."""
    now = time.time() if now is None else now
    folder = cache.location.child(IN_USE, key)
    holders, last = [], None
    for name, (_, mtime) in folder.file_times().items():
        last = mtime if last is None else max(last, mtime)
        try:
            active = json.loads(folder.child(name).read_bytes()).get("active", False)
        except (OSError, ValueError, FileNotFoundError):
            active = False
        if active and now - mtime < IN_USE_TTL_S:
            holders.append(name[: -len(".json")])
    return holders, last


class _FileLease:
    """A blocking file lock presented as a lease (always held once entered)."""

    def __init__(self, lock):
        self._lock = lock

    def __enter__(self) -> bool:
        self._lock.acquire()
        return True

    def __exit__(self, *exc) -> None:
        self._lock.release()
