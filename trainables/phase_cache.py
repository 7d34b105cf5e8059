"""Content-addressed phase-2 checkpoints: each distinct intermediate training runs once per storage.

Many trials share the same phase 2 (same model, intermediate task, learning rate, seed, data and
training options); the cache key is a hash of exactly those fields, so every target task and
phase-3 learning rate reuses one encoder. Entries are written to a staging folder and renamed
into place with a manifest of SHA-256 checksums, so a reader never sees half an entry; a file
lock per key makes a second trial wait for the first instead of training the same thing twice;
an entry whose files do not match its manifest is rebuilt.

Layout under `root`:
    <key>/                      a complete entry (the files + MANIFEST, written last)
    <key>.lock                  the per-key file lock (fcntl; works on local disks and NFSv4)
    .<key>.staging-XXXX/        a write in progress; left behind only by a writer that died,
                                removed by the next writer of that key (under the lock)

Writers must hold `lock(key)` around `lookup` + `store` (`get_or_build` does it for you).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MANIFEST = "xstilts_cache_manifest.json"


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    sums = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            sums[str(path.relative_to(folder))] = _file_sha256(path)
    return sums


@dataclass(frozen=True)
class PhaseCache:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def entry(self, key: str) -> Path:
        return self.root / key

    def lock(self, key: str):
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{key}.lock"))

    def staging_folders(self, key: str) -> list[Path]:
        """Staging folders of `key` (writes in progress, or left by a writer that died)."""
        if not self.root.exists():
            return []
        return sorted(self.root.glob(f".{key}.staging-*"))

    def clean_staging(self, key: str) -> int:
        """Remove the staging folders of `key`; call it holding `lock(key)` (then none is live)."""
        stale = self.staging_folders(key)
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
        return len(stale)

    def lookup(self, key: str) -> dict | None:
        """The entry's manifest if it is complete and intact; a corrupt entry is removed."""
        folder = self.entry(key)
        manifest_path = folder / MANIFEST
        if not manifest_path.exists():
            if folder.exists():  # no manifest: an interrupted write from before atomic renames
                shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            intact = manifest["key"] == key and manifest["checksums"] == _checksums(folder)
        except (ValueError, KeyError, TypeError, OSError):
            intact = False
        if not intact:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return manifest

    def store(self, key: str, source: Path, metadata: dict) -> dict:
        """Copy `source` into the entry atomically and return its manifest (hold `lock(key)`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.clean_staging(key)  # left by a writer of this key that died mid-copy
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.staging-", dir=self.root))
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True)
            manifest = {"key": key, "metadata": metadata, "checksums": _checksums(staging)}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
            target = self.entry(key)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def get_or_build(self, key: str, build: Callable[[Callable[[Path, dict], dict]], object]) -> tuple[dict, bool]:
        """The entry of `key`, built only if no intact entry exists: (manifest, hit).

        `build(store)` trains and calls `store(folder, metadata)` while its folder still exists
        (e.g. inside `checkpoint.as_directory()`). It runs at most once per key across every
        process sharing `root`: the others wait on the lock, then find the entry (a hit).
        """
        with self.lock(key):
            manifest = self.lookup(key)
            if manifest is not None:
                return manifest, True
            self.clean_staging(key)
            stored: list[dict] = []

            def store(source, metadata: dict) -> dict:
                stored.append(self.store(key, Path(source), metadata))
                return stored[-1]

            build(store)
            if not stored:
                raise RuntimeError(f"phase cache {self.root}: the builder of {key} returned without calling store()")
            return stored[-1], False
