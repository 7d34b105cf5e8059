"""`xstilts cache list|prune`: the phase-2 and feature caches of a storage path, and trimming them.

Both caches live under a study's `storage_path` (a local or mounted folder, or an object store)
and are shared by every study that uses it, so they only grow: one encoder per distinct phase-2
training (`phase_cache/<key>/`), one tokenized split per (task, split, language, tokenizer,
length) (`feature_cache/<key>.npz`). `list` shows them; `prune` removes entries by last use,
total size or the study that built them, and never one a running study holds:

- a phase-cache entry a trial is reading: trials mark the entry they use while they run
  (`xstilts.trainables.phase_cache.in_use`: `phase_cache/.in_use/<key>/<trial>.json`, refreshed every
  TTL/4; a marker left by a trial that died goes stale after `IN_USE_TTL_S`);
- an entry being built: its lease is held (a file lock on a local root), or, on an object
  store (whose leases live in the study's Ray cluster), it has files but no manifest yet and
  was written less than `IN_USE_TTL_S` ago;
- a feature-cache entry being encoded (its file lock on a local root). A feature entry is read
  whole once per trial phase; removing one later costs a re-encode, never a wrong result.

Leftovers of writers that died (staging folders, entries without a manifest older than the TTL)
are removed by any prune.
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field

DESCRIPTION = ("List or prune the phase-2 cache (encoders after intermediate training) and the feature cache "
               "(tokenized splits) under a storage path. Prune removes entries by age of last use, total size or "
               "the study that built them; an entry a running study uses or builds is never removed.")

UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class Entry:
    cache: str  # "phase" or "feature"
    key: str
    size: int
    created: float
    last_used: float
    state: str = "complete"  # "complete", "partial" (no manifest), "staging" (a dead writer's)
    study: str | None = None  # the study whose trial built it (phase cache)
    in_use: list[str] = field(default_factory=list)  # who holds it now (trial ids, "building")
    name: str = ""  # its name under the cache root

    def age_days(self, now: float) -> float:
        return (now - self.last_used) / 86400


def add_arguments(parser) -> None:
    commands = parser.add_subparsers(dest="cache_command", required=True, metavar="{list,prune}")
    listing = commands.add_parser("list", help="show every cache entry: size, last use, who built it, in use now",
                                  description="Show the entries of the phase and feature caches under a storage path.")
    prune = commands.add_parser("prune", help="remove entries by last use, total size or study (never one in use)",
                                description="Remove cache entries. Give at least one of --older-than, --max-size, "
                                            "--study; entries in use by a running study are kept.")
    for p in (listing, prune):
        where = p.add_mutually_exclusive_group()
        where.add_argument("--storage-path", help="the storage path whose caches to use (default: the embedded "
                                                  "default study's, ./xstilts_runs)")
        where.add_argument("--config", help="a study config: its storage_path")
        p.add_argument("--cache", choices=["phase", "feature", "all"], default="all", help="which cache (default: all)")
        p.add_argument("--json", action="store_true", help="print JSON")
    prune.add_argument("--older-than", metavar="AGE", help="last used longer ago than AGE, e.g. 7d, 12h, 30m")
    prune.add_argument("--max-size", metavar="SIZE", help="keep the most recently used entries within SIZE, e.g. 20G, 500M")
    prune.add_argument("--study", metavar="NAME", help="entries built by study NAME (phase cache)")
    prune.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")


def parse_age(text: str) -> float:
    from xstilts.study.config import ConfigError

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match:
        raise ConfigError("--older-than", f"cannot read the age {text!r}", "use a number and a unit: 45s, 30m, 12h, 7d, 2w")
    return float(match.group(1)) * AGES[match.group(2)]


def parse_size(text: str) -> int:
    from xstilts.study.config import ConfigError

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", (text or "").upper())
    if not match:
        raise ConfigError("--max-size", f"cannot read the size {text!r}", "use a number and a unit: 500M, 20G, 1.5T")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _storage_path(args) -> str:
    from xstilts.study.config import DEFAULT_CONFIG, load_config
    from xstilts.study.runner import resolve

    config = load_config(args.config if args.config else str(DEFAULT_CONFIG))
    if args.storage_path:
        from xstilts.storage import Location

        return Location(args.storage_path).ref
    return resolve(config, "cache").storage_path


def _lock_held(path) -> bool:
    """Whether another process holds the file lock at `path` (a local lease)."""
    import os

    from filelock import FileLock, Timeout

    if not os.path.exists(path):  # never locked (a held lock has its file); do not create one
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def phase_entries(root: str, now: float | None = None) -> list[Entry]:
    from xstilts.trainables.phase_cache import IN_USE, IN_USE_TTL_S, PhaseCache, usage
    from xstilts.storage import MANIFEST

    now = time.time() if now is None else now
    cache = PhaseCache(root)
    entries = []
    for name in cache.location.children():
        if name == IN_USE or name.endswith(".lock"):
            continue
        folder = cache.location.child(name)
        files = folder.file_times()
        if not files:
            continue
        size = sum(s for s, _ in files.values())
        newest = max(t for _, t in files.values())
        if name.startswith(".") and ".staging-" in name:
            key = name[1:].split(".staging-")[0]
            entries.append(Entry("phase", key, size, newest, newest, "staging", name=name,
                                 in_use=["writing"] if now - newest < IN_USE_TTL_S else []))
            continue
        entry = Entry("phase", name, size, newest, newest, name=name)
        if MANIFEST in files:
            entry.created = files[MANIFEST][1]
            try:
                manifest = json.loads(folder.child(MANIFEST).read_bytes())
                entry.study = (manifest.get("metadata") or {}).get("study_name")
            except (ValueError, OSError):
                pass
        else:
            entry.state = "partial"
        holders, last = usage(cache, name, now)
        entry.in_use = holders
        entry.last_used = max(entry.created, last or 0.0)
        if not cache.remote and _lock_held(cache.location.child(f"{name}.lock").ref):
            entry.in_use = [*entry.in_use, "building"]
        elif cache.remote and entry.state == "partial" and now - newest < IN_USE_TTL_S:
            entry.in_use = [*entry.in_use, "being written"]  # its lease lives in the study's Ray
        entries.append(entry)
    return entries


def feature_entries(root: str) -> list[Entry]:
    from xstilts.storage import Location

    location = Location(root)
    entries = []
    for name, (size, mtime) in location.file_times().items():
        if "/" in name or not name.endswith(".npz"):
            continue
        key = name[: -len(".npz")]
        entry = Entry("feature", key, size, mtime, mtime, name=name)
        if not location.remote and _lock_held(location.child(f"{key}.lock").ref):
            entry.in_use = ["encoding"]
        entries.append(entry)
    return entries


def all_entries(storage_path: str, which: str, now: float) -> list[Entry]:
    from xstilts.storage import child

    entries = []
    if which in ("phase", "all"):
        entries += phase_entries(child(storage_path, "phase_cache"), now)
    if which in ("feature", "all"):
        entries += feature_entries(child(storage_path, "feature_cache"))
    return entries


def select_for_pruning(entries: list[Entry], now: float, older_than: float | None = None,
                       max_size: int | None = None, study: str | None = None) -> list[Entry]:
    """The entries to remove: those matching a criterion, and the leftovers of dead writers;
    never one in use. --max-size keeps the most recently used entries within the size."""
    free = [e for e in entries if not e.in_use]
    chosen = {id(e) for e in free if e.state != "complete"}  # a dead writer's leftovers
    if older_than is not None:
        chosen |= {id(e) for e in free if now - e.last_used > older_than}
    if study is not None:
        chosen |= {id(e) for e in free if e.study == study}
    if max_size is not None:
        kept = 0
        held = sum(e.size for e in entries if e.in_use)  # in use: kept whatever the size
        for entry in sorted((e for e in free if id(e) not in chosen), key=lambda e: e.last_used, reverse=True):
            if held + kept + entry.size <= max_size:
                kept += entry.size
            else:
                chosen.add(id(entry))
    return [e for e in entries if id(e) in chosen]


def remove(storage_path: str, entry: Entry) -> None:
    from xstilts.trainables.phase_cache import IN_USE
    from xstilts.storage import Location, child

    if entry.cache == "phase":
        root = Location(child(storage_path, "phase_cache"))
        root.child(entry.name).delete()
        if entry.state != "staging":
            root.child(IN_USE, entry.key).delete()
    else:
        Location(child(storage_path, "feature_cache")).child(entry.name).delete()


def _row(entry: Entry, now: float) -> str:
    used = "in use by " + ", ".join(entry.in_use) if entry.in_use else f"last used {entry.age_days(now):.1f} d ago"
    state = "" if entry.state == "complete" else f" [{entry.state}]"
    study = f", study {entry.study}" if entry.study else ""
    return f"{entry.cache:<7} {entry.key:<24} {human(entry.size):>10}  {used}{study}{state}"


def main(args) -> int:
    from xstilts.study.cli import _bad_input
    from xstilts.study.config import ConfigError
    from xstilts.storage import StorageError

    command = f"cache {args.cache_command}"
    now = time.time()
    try:
        storage_path = _storage_path(args)
        criteria = {}
        if args.cache_command == "prune":
            if args.older_than is None and args.max_size is None and args.study is None:
                raise ConfigError("--older-than", "prune needs at least one of --older-than, --max-size, --study",
                                  "e.g. xstilts cache prune --older-than 30d")
            criteria = {"older_than": parse_age(args.older_than) if args.older_than is not None else None,
                        "max_size": parse_size(args.max_size) if args.max_size is not None else None,
                        "study": args.study}
        entries = all_entries(storage_path, args.cache, now)
    except ConfigError as error:
        return _bad_input(command, str(error))
    except StorageError as error:
        return _bad_input(command, f"storage path: {error.message}; {error.fix}")
    if args.cache_command == "list":
        if args.json:
            print(json.dumps({"storage_path": storage_path, "entries": [asdict(e) for e in entries]}, indent=1))
            return 0
        for entry in sorted(entries, key=lambda e: (e.cache, -e.last_used)):
            print(_row(entry, now))
        busy = sum(1 for e in entries if e.in_use)
        print(f"{len(entries)} entries, {human(sum(e.size for e in entries))} under {storage_path}"
              + (f"; {busy} in use now" if busy else ""))
        return 0
    chosen = select_for_pruning(entries, now, **criteria)
    removed = []
    for entry in chosen:
        if not args.dry_run:
            try:
                remove(storage_path, entry)
            except (OSError, StorageError) as error:
                print(f"xstilts cache prune: warning: could not remove {entry.cache} {entry.key}: {error}", file=sys.stderr)
                continue
        removed.append(entry)
    verb = "would remove" if args.dry_run else "removed"
    if args.json:
        print(json.dumps({"storage_path": storage_path, "dry_run": args.dry_run,
                          "removed": [asdict(e) for e in removed], "bytes": sum(e.size for e in removed),
                          "kept_in_use": [asdict(e) for e in entries if e.in_use]}, indent=1))
        return 0
    for entry in removed:
        print(f"{verb}: {_row(entry, now)}")
    kept = [e for e in entries if e not in removed]
    skipped = [e for e in kept if e.in_use]
    print(f"{verb} {len(removed)} entries, {human(sum(e.size for e in removed))}; kept {len(kept)} "
          f"({human(sum(e.size for e in kept))})" + (f", {len(skipped)} of them in use now" if skipped else ""))
    return 0
