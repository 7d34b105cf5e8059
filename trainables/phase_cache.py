"""Content-addressed phase-2 checkpoints: each distinct intermediate training runs once per storage.

Many trials share the same phase 2 (same model, intermediate task, learning rate, seed, data and
training options); the cache key is a hash of exactly those fields, so every target task and
phase-3 learning rate reuses one encoder. Entries are written to a staging folder and renamed
into place with a manifest of SHA-256 checksums, so a reader never sees half an entry; a file
lock per key makes a second trial wait for the first instead of training the same thing twice;
an entry whose files do not match its manifest is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "xstilts_cache_manifest.json"


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _checksums(folder: Path) -> dict[str, str]:
    sums = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            sums[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
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
            intact = manifest["checksums"] == _checksums(folder)
        except (ValueError, KeyError):
            intact = False
        if not intact:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return manifest

    def store(self, key: str, source: Path, metadata: dict) -> dict:
        """Copy `source` into the entry atomically and return its manifest."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.staging-", dir=self.root))
        try:
            shutil.copytree(source, staging, dirs_exist_ok=True)
            manifest = {"key": key, "metadata": metadata, "checksums": _checksums(staging)}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            target = self.entry(key)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest
