"""Short-deadline probes of what the CLI is pointed at, run before anything is started or written.

Each probe returns None when the dependency answers and raises a one-line `ConfigError` naming
the option (`--address`, `--tracking-uri`, ...) and the fix otherwise, within its deadline:
nothing here waits on a dead host, a closed port, or a socket that accepts and never answers.

- `probe_ray_address`: `auto`/`local` pass through; `host:port` (the GCS) and `ray://host:port`
  (the Ray Client server) must accept a TCP connection and answer as a gRPC (HTTP/2) server
  does, by sending its SETTINGS frame, within the deadline.
- `probe_tracking_uri`: http(s) must answer GET /health (xstilts.study.runner.check_tracking_server);
  `sqlite:///path` must be an SQLite database (or not exist yet), not another file or a folder;
  `postgresql://` / `mysql://` need their driver module and a TCP answer from the host.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import threading
import urllib.parse
from typing import Callable

from xstilts.mlflow_store import sqlite_path
from xstilts.study.config import ConfigError, short

DEFAULT_TIMEOUT_S = 10.0  # $XSTILTS_PROBE_TIMEOUT_S overrides it (a slow link; tests)
RAY_CLIENT_PORT = 10001
SQLITE_HEADER = b"SQLite format 3\x00"
ADDRESS_FORMS = "auto, host:port (the head's GCS, e.g. 10.0.0.5:6379) or ray://host:port (e.g. ray://head:10001)"

# HTTP/2 client connection preface + an empty SETTINGS frame: a gRPC server answers with its own
# SETTINGS frame (type 0x4) before anything else.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x4

# SQLAlchemy dialect[+driver] of a database tracking URI -> (module to import, package to install).
DB_DRIVERS = {
    "postgresql": ("psycopg2", "psycopg2-binary"),
    "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
    "postgresql+psycopg": ("psycopg", "psycopg[binary]"),
    "postgresql+pg8000": ("pg8000", "pg8000"),
    "mysql": ("MySQLdb", "mysqlclient"),
    "mysql+mysqldb": ("MySQLdb", "mysqlclient"),
    "mysql+pymysql": ("pymysql", "pymysql"),
    "mysql+mysqlconnector": ("mysql.connector", "mysql-connector-python"),
}
DB_PORTS = {"postgresql": 5432, "mysql": 3306}


def default_timeout() -> float:
    try:
        value = float(os.environ.get("XSTILTS_PROBE_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if 0 < value <= 60 else DEFAULT_TIMEOUT_S


def redact(uri: str) -> str:
    """`uri` with its secrets replaced by *** (xstilts.study.study_run.redact_uri), for messages."""
    from xstilts.study.study_run import redact_uri

    return redact_uri(uri)


def _within(deadline_s: float, fn: Callable[[], None], on_timeout: Callable[[], ConfigError]) -> None:
    """Run `fn` in a daemon thread and give up at the deadline (getaddrinfo has no timeout of its own)."""
    outcome: list[BaseException | None] = []

    def target():
        try:
            fn()
            outcome.append(None)
        except BaseException as error:  # handed to the caller's thread
            outcome.append(error)

    thread = threading.Thread(target=target, name="xstilts-probe", daemon=True)
    thread.start()
    thread.join(deadline_s)
    if not outcome:
        raise on_timeout()
    if outcome[0] is not None:
        raise outcome[0]


run_with_deadline = _within  # for other probes (e.g. an object store): fn() or on_timeout() at the deadline


def parse_ray_address(address: str) -> tuple[str, str, int] | None:
    """("gcs" | "client", host, port) of a cluster address; None for auto/local. ConfigError when
    the address has none of the accepted forms."""
    if not isinstance(address, str) or not address.strip():
        raise ConfigError("--address", "is empty", f"give {ADDRESS_FORMS}, or leave it out for a local Ray")
    text = address.strip()
    if text in ("auto", "local"):
        return None
    kind, rest = ("client", text[len("ray://"):]) if text.startswith("ray://") else ("gcs", text)
    bad = ConfigError("--address", f"{short(address)} is not a Ray address", f"use {ADDRESS_FORMS}")
    if "://" in rest or "/" in rest.rstrip("/") or not rest or not rest.isprintable() or " " in rest:
        raise bad
    try:
        parts = urllib.parse.urlsplit("//" + rest.rstrip("/"))
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number in 0..65535
        raise bad from None
    if not host or parts.username is not None:
        raise bad
    if port is None:
        if kind == "gcs":
            raise ConfigError("--address", f"{short(address)} has no port", f"use {ADDRESS_FORMS}")
        port = RAY_CLIENT_PORT
    if port == 0:
        raise bad
    return kind, host, port


class _Silent(Exception):
    """Connected, but no answer within the deadline."""


def _reason(error: BaseException) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    text = " ".join(str(text).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _connect(host: str, port: int, timeout_s: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout_s)


def _grpc_answers(host: str, port: int, timeout_s: float) -> None:
    """Connect, send the HTTP/2 preface and read the server's first frame header (SETTINGS)."""
    with _connect(host, port, timeout_s) as sock:
        sock.settimeout(timeout_s)
        header = b""
        try:
            sock.sendall(_HTTP2_PREFACE)
            while len(header) < 9:
                chunk = sock.recv(9 - len(header))
                if not chunk:
                    raise ConnectionError("the connection was closed without an answer")
                header += chunk
        except socket.timeout:
            raise _Silent() from None
        if header[3] != _SETTINGS:
            raise ConnectionError("it does not speak gRPC (HTTP/2)")


def probe_ray_address(address: str | None, timeout_s: float | None = None) -> None:
    """A Ray cluster address that answers within `timeout_s` (default: default_timeout()), or a
    ConfigError naming --address."""
    timeout_s = timeout_s or default_timeout()
    if address is None:
        return  # a local Ray is started
    parsed = parse_ray_address(address)
    if parsed is None:
        return  # auto: ray.init finds the cluster (and says so quickly when there is none)
    kind, host, port = parsed
    what = "Ray Client server" if kind == "client" else "Ray GCS"
    fix = ("start the cluster (`ray start --head`" + (", Ray Client on port 10001" if kind == "client" else "")
           + ") or fix --address")

    def check():
        try:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                _connect(host, port, timeout_s).close()  # TLS: the TCP handshake is what we can check
            else:
                _grpc_answers(host, port, timeout_s)
        except _Silent:
            raise ConfigError("--address", f"the {what} at {host}:{port} accepted the connection but did not answer "
                              f"within {timeout_s:g}s", fix) from None
        except OSError as error:  # refused, unreachable, unknown host, timed out connecting
            raise ConfigError("--address", f"cannot reach the {what} at {host}:{port} ({_reason(error)})", fix) from None

    _within(timeout_s + 1, check, lambda: ConfigError(
        "--address", f"no answer from the {what} at {host}:{port} within {timeout_s:g}s", fix))


def probe_tracking_uri(uri: str, timeout_s: float | None = None, field: str = "--tracking-uri") -> None:
    """An MLflow tracking URI that can be used, checked within `timeout_s` (default:
    default_timeout()), or a ConfigError naming `field`."""
    timeout_s = timeout_s or default_timeout()
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(field, "is empty", "give sqlite:///path/mlflow.db or http://host:port")
    shown = short(redact(uri))
    if not uri.isprintable():
        raise ConfigError(field, f"{shown} has control characters", "give sqlite:///path/mlflow.db or http://host:port")
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme in ("http", "https"):
        _probe_http(uri, timeout_s, field)
    elif scheme == "sqlite":
        _probe_sqlite(uri, field)
    elif scheme.split("+", 1)[0] in DB_PORTS:
        _probe_database(uri, scheme, timeout_s, field)
    elif scheme == "databricks":
        return  # the Databricks SDK's own configuration; nothing to probe cheaply
    else:
        raise ConfigError(field, f"unsupported tracking URI {shown}",
                          "use sqlite:///path/mlflow.db, http(s)://host:port, postgresql://... or mysql://...")


def _probe_http(uri: str, timeout_s: float, field: str) -> None:
    from xstilts.study.runner import check_tracking_server

    shown = short(redact(uri))
    fix = "start it (mlflow server ...) or fix " + field

    def check():
        try:
            check_tracking_server(uri, timeout=timeout_s)
        except ConfigError as error:  # its message carries the URI: say it again, password redacted
            raise ConfigError(field, error.problem.replace(uri, redact(uri)), fix) from None

    _within(timeout_s + 2, check, lambda: ConfigError(
        field, f"no MLflow server answers at {shown} within {timeout_s:g}s", fix))


def _probe_sqlite(uri: str, field: str) -> None:
    path = sqlite_path(uri)
    shown = short(path)
    if not path or path == ":memory:":
        raise ConfigError(field, f"{short(uri)} names no database file", "use sqlite:///path/mlflow.db")
    path = os.path.expanduser(path)
    if not os.path.lexists(path):
        return  # a new store: created when the study starts (the parent folder is checked by the config)
    if os.path.isdir(path):
        raise ConfigError(field, f"{shown} is a folder, not an SQLite database",
                          "name a database file, e.g. sqlite:///xstilts_runs/mlflow.db")
    if not os.path.isfile(path):
        raise ConfigError(field, f"{shown} is not a regular file (a device, pipe or socket, or a broken link)",
                          "name an SQLite database file")
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as error:
        raise ConfigError(field, f"cannot read {shown}: {error.strerror or error}",
                          "give a database you can read and write") from None
    if header and header != SQLITE_HEADER:  # an empty file is an empty database to SQLite
        raise ConfigError(field, f"{shown} is not an SQLite database", "name an MLflow SQLite store, or a new file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(field, f"{shown} is not readable and writable", "give a database you can read and write")


def _probe_database(uri: str, scheme: str, timeout_s: float, field: str) -> None:
    shown = short(redact(uri))
    driver = DB_DRIVERS.get(scheme)
    if driver is None:
        known = ", ".join(k for k in DB_DRIVERS if "+" in k)
        raise ConfigError(field, f"unknown database driver in {shown}", f"use one of: {known}")
    module, package = driver
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(field, f"{scheme} needs the Python package {package} (module {module}), which is not installed",
                          f"pip install {package}")
    try:
        parts = urllib.parse.urlsplit(uri)
        host, port = parts.hostname, parts.port or DB_PORTS[scheme.split("+", 1)[0]]
    except ValueError:
        raise ConfigError(field, f"{shown} has an invalid host or port", "e.g. postgresql://user@host:5432/db") from None
    if not host:
        return  # a Unix socket: the driver connects itself

    def check():
        try:
            _connect(host, port, timeout_s).close()
        except OSError as error:
            raise ConfigError(field, f"cannot reach the database at {host}:{port} ({_reason(error)})",
                              "start it or fix " + field) from None

    _within(timeout_s + 1, check, lambda: ConfigError(
        field, f"no answer from the database at {host}:{port} within {timeout_s:g}s", "start it or fix " + field))
