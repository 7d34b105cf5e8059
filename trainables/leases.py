"""Expiring leases on phase-cache keys, for roots in an object store.

Why a Ray actor: an object store has no file locks, and the conditional writes some offer
(If-None-Match) are neither exposed by pyarrow nor supported by every S3-compatible server. The
trials of a study all reach its Ray cluster, so one named actor, which handles one call at a
time, is an arbiter every node agrees on without any clock but its own. A lease lapses when its
holder stops renewing it (the holder's trial was killed, its node was lost), and then the next
trial that asks gets it and builds the entry itself.

The actor lives on the head node (it must not keep an autoscaled worker node alive) and is
detached and shared by name: every study of a cluster that uses the same phase cache asks the
same arbiter. It keeps no state that matters beyond a lease's TTL: if it is lost, a new one
starts empty and the manifest-last rule of the cache still keeps readers from half entries.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from contextlib import contextmanager

LEASE_TTL_ENV = "XSTILTS_LEASE_TTL_S"
DEFAULT_TTL_S = 120.0
ACTOR_NAMESPACE = "xstilts"


def lease_ttl() -> float:
    return float(os.environ.get(LEASE_TTL_ENV, DEFAULT_TTL_S))


class LeaseTable:
    """The arbiter's state: key -> (holder, expiry). `clock` is injectable for tests."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._leases: dict[str, tuple[str, float]] = {}
        self.grants: list[tuple[str, str]] = []  # (key, holder) of every grant, for tests and logs

    def acquire(self, key: str, holder: str, ttl: float) -> bool:
        now = self._clock()
        current = self._leases.get(key)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._leases[key] = (holder, now + ttl)
        if current is None or current[0] != holder:
            self.grants.append((key, holder))
        return True

    def renew(self, key: str, holder: str, ttl: float) -> bool:
        current = self._leases.get(key)
        if current is None or current[0] != holder:
            return False
        self._leases[key] = (holder, self._clock() + ttl)
        return True

    def release(self, key: str, holder: str) -> None:
        current = self._leases.get(key)
        if current is not None and current[0] == holder:
            del self._leases[key]

    def holder(self, key: str) -> str | None:
        current = self._leases.get(key)
        return current[0] if current is not None and current[1] > self._clock() else None

    def grant_log(self) -> list[tuple[str, str]]:
        return list(self.grants)


def actor_name(cache_root: str) -> str:
    import hashlib

    return "xstilts-phase-leases-" + hashlib.sha256(cache_root.encode()).hexdigest()[:12]


def lease_actor(cache_root: str):
    """The cluster's lease arbiter for `cache_root` (created on the head node if absent)."""
    import ray

    remote_table = ray.remote(LeaseTable)
    return remote_table.options(
        name=actor_name(cache_root), namespace=ACTOR_NAMESPACE, get_if_exists=True, lifetime="detached",
        num_cpus=0, max_concurrency=1, resources={"node:__internal_head__": 0.001},
    ).remote()


class LeaseClient:
    """A trial's side of the leases: `with client.hold(key) as held:` (held: bool).

    While held, a thread renews the lease every ttl/4; if renewal fails (the lease lapsed, e.g.
    the process was frozen for longer than the TTL) the build goes on: the entry it publishes is
    still complete and valid, the only cost is that another trial may build it too.
    """

    def __init__(self, table, ttl: float | None = None, holder: str | None = None):
        self.table = table  # a LeaseTable, or its Ray actor handle
        self.ttl = lease_ttl() if ttl is None else ttl
        self.holder = holder or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def _call(self, method: str, *args):
        attribute = getattr(self.table, method)
        if hasattr(attribute, "remote"):
            import ray

            return ray.get(attribute.remote(*args), timeout=60)
        return attribute(*args)

    @contextmanager
    def hold(self, key: str):
        if not self._call("acquire", key, self.holder, self.ttl):
            yield False
            return
        stop = threading.Event()

        def renew():
            while not stop.wait(self.ttl / 4):
                try:
                    if not self._call("renew", key, self.holder, self.ttl):
                        return
                except Exception:  # noqa: BLE001 - the arbiter is briefly unreachable: try again
                    continue

        thread = threading.Thread(target=renew, name=f"lease-{key}", daemon=True)
        thread.start()
        try:
            yield True
        finally:
            stop.set()
            thread.join(timeout=5)
            try:
                self._call("release", key, self.holder)
            except Exception:  # noqa: BLE001 - it lapses by itself
                pass
