"""Riding out an MLflow tracking server that is briefly unreachable (restarted, overloaded, a
network blip): retry a whole tracking call with exponential backoff for a bounded time.

Two layers, on purpose:
- MLflow's own HTTP layer retries each request (urllib3, MLFLOW_HTTP_REQUEST_MAX_RETRIES,
  default 7 with backoff factor 2: about 4 minutes of patience per request, silently).
- `call_with_retry` wraps one logical call (`log_batch`, `create_run`, `search_runs`, ...): it
  retries what MLflow gave up on or never retries (a sqlite store that is locked, a server that
  answers before its database is ready), says so in ONE warning line per outage on stderr, and
  gives up after XSTILTS_MLFLOW_RETRY_S seconds (default 120) by re-raising the last error.

Only failures that can heal are retried (connection errors, timeouts, 5xx/429, "database is
locked"); a bad request (4xx, an invalid parameter) is raised at once.

Every call wrapped here must be safe to repeat: the request may have reached the server before
the connection broke. Callers make them so: metrics carry their own (timestamp, step) and the
store keeps one row per such point; a run is looked up by its tags before it is created.
"""
from __future__ import annotations

import os
import random
import sys
import threading
import time
from typing import Callable, TypeVar

RETRY_ENV = "XSTILTS_MLFLOW_RETRY_S"
DEFAULT_RETRY_S = 120.0
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 15.0

T = TypeVar("T")

# Messages of errors that can heal. MLflow turns most transport failures into an
# MlflowException whose text carries the underlying cause.
_TRANSIENT_TEXT = (
    "max retries exceeded", "connection refused", "connection reset", "connection aborted",
    "remote end closed", "read timed out", "timed out", "temporarily unavailable",
    "database is locked", "502", "503", "504", "429", "bad gateway", "service unavailable",
    "too many 500 error responses", "too many 429 error responses",
)
# Error codes of MlflowException that say the request itself is wrong: repeating cannot help.
_PERMANENT_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                    "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_STATE"}

_outage_lock = threading.Lock()
_in_outage = False  # per process: one warning line per outage, not one per retried call


def retry_seconds() -> float:
    """Total patience per call, from XSTILTS_MLFLOW_RETRY_S (seconds; 0 disables retrying)."""
    raw = os.environ.get(RETRY_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_RETRY_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        return DEFAULT_RETRY_S


def is_transient(error: BaseException) -> bool:
    """Whether `error` from an MLflow client call may go away if the call is repeated."""
    try:
        import requests

        if isinstance(error, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover - requests comes with mlflow
        pass
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if getattr(error, "error_code", None) in _PERMANENT_CODES:
        return False
    # Transport errors wrapped by MLflow (after its own HTTP retries), a 5xx it gave up on, and
    # sqlalchemy's OperationalError on a locked sqlite file: recognised by their text.
    text = str(error).lower()
    return any(part in text for part in _TRANSIENT_TEXT)


def _warn(line: str) -> None:
    print(f"xstilts: warning: {line}", file=sys.stderr, flush=True)


def call_with_retry(fn: Callable[..., T], *args, what: str = "an MLflow call", deadline_s: float | None = None,
                    **kwargs) -> T:
    """`fn(*args, **kwargs)`, retried with exponential backoff (1 s doubling to 15 s, jittered)
    while it fails with a transient error, for at most `deadline_s` seconds in all (default:
    XSTILTS_MLFLOW_RETRY_S, 120). The last error is raised when patience runs out."""
    global _in_outage
    patience = retry_seconds() if deadline_s is None else deadline_s
    started = time.monotonic()
    delay = FIRST_DELAY_S
    while True:
        try:
            result = fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - classified just below
            waited = time.monotonic() - started
            if not is_transient(error) or waited + delay > patience:
                if is_transient(error):
                    with _outage_lock:
                        _in_outage = False  # the next failing call starts (and reports) a new outage
                    _warn(f"MLflow still unreachable after {waited:.0f}s ({what}); giving up "
                          f"(raise {RETRY_ENV} to wait longer)")
                raise
            with _outage_lock:
                first = not _in_outage
                _in_outage = True
            if first:
                cause = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
                _warn(f"MLflow unreachable during {what} ({cause}); retrying for up to {patience:.0f}s "
                      f"({RETRY_ENV})")
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        with _outage_lock:
            if _in_outage:
                _in_outage = False
                _warn(f"MLflow reachable again ({what} went through after {time.monotonic() - started:.0f}s)")
        return result
