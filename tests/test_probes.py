"""xstilts.study.probes: every address and tracking URI the CLI is given is probed with a short deadline
before anything starts: a closed port fails at once, a socket that accepts and never answers
fails at the deadline, a file that is not a database or a missing driver fails with one line."""
from __future__ import annotations

import socket
import sqlite3
import time

import pytest

from xstilts.study.config import ConfigError
from xstilts.study.probes import SQLITE_HEADER, parse_ray_address, probe_ray_address, probe_tracking_uri, redact


@pytest.fixture
def silent_port():
    """A socket that listens (the kernel completes the TCP handshake) and never accepts or answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def closed_port():
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # bound once, now closed: nothing listens
    return port


def _fails(call, field: str, *words: str, within: float) -> str:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        call()
    took = time.monotonic() - started
    message = str(caught.value)
    assert took < within, f"took {took:.1f}s: {message}"
    assert f"'{field}'" in message and "\n" not in message
    for word in words:
        assert word in message
    return message


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_address_closed_port_fails_fast(closed_port, scheme):
    _fails(lambda: probe_ray_address(f"{scheme}127.0.0.1:{closed_port}", timeout_s=10), "--address",
           "cannot reach", within=3)


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_address_silent_listener_gives_up_at_the_deadline(silent_port, scheme):
    message = _fails(lambda: probe_ray_address(f"{scheme}127.0.0.1:{silent_port}", timeout_s=2), "--address",
                     "did not answer", within=6)
    assert "2s" in message


def test_address_default_deadline_is_well_under_30s(silent_port):
    _fails(lambda: probe_ray_address(f"127.0.0.1:{silent_port}"), "--address", within=15)


def test_address_grpc_server_passes():
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        probe_ray_address(f"127.0.0.1:{port}", timeout_s=5)
        probe_ray_address(f"ray://127.0.0.1:{port}", timeout_s=5)
    finally:
        server.stop(0)


@pytest.mark.parametrize("address", ["not-an-address", "host:abc", "ray://h:99999", "http://h:1", "h:1/x", "", " ",
                                     "ray://", "a b:1", "u@h:1"])
def test_unparsable_address_names_the_accepted_forms(address):
    _fails(lambda: parse_ray_address(address), "--address", within=1)
    _fails(lambda: probe_ray_address(address), "--address", within=1)


def test_address_forms():
    assert parse_ray_address("auto") is None
    assert parse_ray_address("10.0.0.5:6379") == ("gcs", "10.0.0.5", 6379)
    assert parse_ray_address("ray://head:10001") == ("client", "head", 10001)
    assert parse_ray_address("ray://head") == ("client", "head", 10001)
    assert parse_ray_address("[::1]:6379") == ("gcs", "::1", 6379)
    probe_ray_address(None)
    probe_ray_address("auto")


def test_tracking_http_closed_and_silent(closed_port, silent_port):
    _fails(lambda: probe_tracking_uri(f"http://127.0.0.1:{closed_port}", timeout_s=10), "--tracking-uri",
           "no MLflow server", within=3)
    _fails(lambda: probe_tracking_uri(f"http://127.0.0.1:{silent_port}", timeout_s=2), "--tracking-uri",
           "no MLflow server", within=6)


def test_tracking_http_password_is_redacted(closed_port):
    message = _fails(lambda: probe_tracking_uri(f"http://alice:s3cret@127.0.0.1:{closed_port}", timeout_s=2),
                     "--tracking-uri", within=6)
    assert "s3cret" not in message
    assert redact("postgresql://alice:pw@host/db") == "postgresql://alice:***@host/db"


def test_tracking_sqlite(tmp_path):
    _fails(lambda: probe_tracking_uri("sqlite:////etc/passwd"), "--tracking-uri", "not an SQLite database", within=1)
    _fails(lambda: probe_tracking_uri(f"sqlite:///{tmp_path}"), "--tracking-uri", "is a folder", within=1)
    text = tmp_path / "text.db"
    text.write_text("hello, not a database at all")
    _fails(lambda: probe_tracking_uri(f"sqlite:///{text}", field="mlflow.tracking_uri"), "mlflow.tracking_uri",
           "not an SQLite database", within=1)
    probe_tracking_uri(f"sqlite:///{tmp_path / 'new.db'}")  # a new store is fine
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    probe_tracking_uri(f"sqlite:///{empty}")  # SQLite treats an empty file as an empty database
    real = tmp_path / "real.db"
    sqlite3.connect(real).execute("create table t (x)").connection.close()
    assert real.read_bytes()[:16] == SQLITE_HEADER
    probe_tracking_uri(f"sqlite:///{real}")


@pytest.mark.parametrize("uri,package", [("postgresql://u:pw@127.0.0.1/db", "psycopg2"),
                                         ("mysql://127.0.0.1/db", "mysqlclient"),
                                         ("mysql+pymysql://127.0.0.1/db", "pymysql")])
def test_tracking_database_without_driver(uri, package, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("psycopg2", "MySQLdb", "pymysql") else real(name, *a))
    message = _fails(lambda: probe_tracking_uri(uri), "--tracking-uri", package, "pip install", within=1)
    assert "pw" not in message


def test_tracking_database_closed_port(closed_port, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    _fails(lambda: probe_tracking_uri(f"postgresql://u@127.0.0.1:{closed_port}/db"), "--tracking-uri",
           "cannot reach the database", within=3)


@pytest.mark.parametrize("uri", ["", "./mlruns", "ftp://x", "sqlite://", "http://x\n"])
def test_tracking_unusable_forms(uri):
    _fails(lambda: probe_tracking_uri(uri), "--tracking-uri", within=3)
