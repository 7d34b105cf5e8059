"""The storage layer on local paths (object stores: tests/test_cloud_s3.py) and the lease table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from xstilts.storage import (MANIFEST, Location, StorageError, child, filesystem, is_uri, local_copy, probe, publish, published,
                     to_local, uri_of)
from xstilts.study.config import DEFAULT_CONFIG
from xstilts.trainables.leases import LeaseClient, LeaseTable


def test_child_joins_uris_with_slashes_and_paths_with_os_path():
    assert child("s3://bucket/studies", "phase_cache", "k1") == "s3://bucket/studies/phase_cache/k1"
    assert child("s3://bucket/studies/", "/x/") == "s3://bucket/studies/x"
    assert child("gs://b", "a") == "gs://b/a"
    assert child("/data/runs", "phase_cache") == os.path.join("/data/runs", "phase_cache")
    # The bug this layer fixes: os.path.join / Path collapse "s3://" into a local folder "s3:/".
    assert str(Path("s3://bucket/x")) == "s3:/bucket/x"
    assert Location("s3://bucket/x").child("y").ref == "s3://bucket/x/y"


def test_uri_detection_and_local_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_uri("s3://b/x") and is_uri("gs://b/x") and not is_uri("runs") and not is_uri("file:///tmp/x")
    assert Location("runs").ref == str(tmp_path / "runs")
    assert Location("file:///tmp/x").ref == "/tmp/x"
    fs, path = filesystem("runs")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "runs")
    assert to_local("xlm-roberta-large") == "xlm-roberta-large"  # a hub name passes through


def test_s3_filesystem_takes_the_endpoint_and_region_from_the_aws_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    fs, path = filesystem("s3://bucket/prefix/")
    assert path == "bucket/prefix" and isinstance(fs, pafs.S3FileSystem)
    assert fs.region == "eu-west-1"
    assert uri_of(fs, "bucket/prefix/ckpt") == "s3://bucket/prefix/ckpt"
    assert uri_of(pafs.LocalFileSystem(), "/tmp/ckpt") == "/tmp/ckpt"


def test_local_location_read_write_list_delete(tmp_path):
    folder = Location(str(tmp_path / "a"))
    assert not folder.exists() and folder.files() == {} and folder.children() == []
    folder.child("x", "y.bin").write_bytes(b"123")
    folder.child("z.txt").write_text("hello")
    assert folder.child("z.txt").read_text() == "hello"
    assert folder.files() == {"x/y.bin": 3, "z.txt": 5}
    assert folder.children() == ["x", "z.txt"]
    with pytest.raises(FileNotFoundError):
        folder.child("missing").read_bytes()
    assert not list(Path(tmp_path / "a").glob(".*.tmp"))  # the temporary file was renamed into place
    folder.delete()
    assert not folder.exists()


def test_publish_then_local_copy_verifies_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("XSTILTS_NODE_CACHE", str(tmp_path / "node-cache"))
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    target = str(tmp_path / "storage" / "model")
    manifest = publish(source, target, {"kind": "test"})
    assert manifest["kind"] == "test" and set(manifest["checksums"]) == {"config.json", "sub/weights.bin"}
    assert published(target)
    copy = local_copy(target)
    assert Path(copy, "sub", "weights.bin").read_bytes() == (source / "sub" / "weights.bin").read_bytes()
    assert local_copy(target) == copy  # downloaded once per node
    # A damaged file (same size) fails verification on a node that has no copy yet.
    monkeypatch.setenv("XSTILTS_NODE_CACHE", str(tmp_path / "another-node"))
    Path(target, "sub", "weights.bin").write_bytes(b"x" * 2560)
    with pytest.raises(StorageError, match="do not match the manifest"):
        local_copy(target)
    kept = [p.name for p in (tmp_path / "another-node" / "folders").iterdir() if p.is_dir()]
    assert kept == []  # neither the copy nor its download folder is kept
    Path(target, MANIFEST).unlink()
    assert not published(target)


def test_probe_passes_local_paths_and_names_the_endpoint_when_unreachable(monkeypatch):
    probe("/tmp/anything")  # local paths are checked by the config (writable), not here
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(StorageError) as raised:
        probe("s3://some-bucket/studies")
    assert "127.0.0.1:9" in str(raised.value) and "AWS_ENDPOINT_URL" in raised.value.fix


def test_run_with_an_unreachable_object_store_exits_2_and_writes_nothing(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["storage_path"] = "s3://xstilts-bucket/studies"
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY": "very-secret-value"}
    result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "storage_path" in lines[0] and "AWS_ENDPOINT_URL" in lines[0], result.stderr
    assert "very-secret-value" not in result.stderr + result.stdout  # credentials are never printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # no MLflow store, no folders


# --- leases ---------------------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lease_table_grants_one_holder_until_it_lapses():
    clock = _Clock()
    table = LeaseTable(clock)
    assert table.acquire("k", "a", ttl=10)
    assert not table.acquire("k", "b", ttl=10)  # held
    assert table.acquire("k", "a", ttl=10)  # the holder again: a renewal, not a new grant
    clock.now = 9
    assert table.renew("k", "a", ttl=10) and not table.renew("k", "b", ttl=10)
    clock.now = 18
    assert not table.acquire("k", "b", ttl=10)  # renewed at 9: held until 19
    clock.now = 19.5  # "a" died and stopped renewing: the lease lapsed
    assert table.holder("k") is None
    assert table.acquire("k", "b", ttl=10) and table.holder("k") == "b"
    assert not table.renew("k", "a", ttl=10)  # the old holder cannot take it back
    table.release("k", "a")  # nor release it
    assert table.holder("k") == "b"
    table.release("k", "b")
    assert table.acquire("k", "c", ttl=10)
    assert table.grant_log() == [("k", "a"), ("k", "b"), ("k", "c")]
    assert table.acquire("other", "a", ttl=10)  # keys are independent


def test_lease_client_holds_renews_and_releases():
    table = LeaseTable()
    first, second = LeaseClient(table, ttl=0.4, holder="one"), LeaseClient(table, ttl=0.4, holder="two")
    with first.hold("k") as held:
        assert held
        with second.hold("k") as also:
            assert not also
        import time

        time.sleep(1.0)  # longer than the TTL: the renewing thread kept it
        assert table.holder("k") == "one"
    assert table.holder("k") is None
    with second.hold("k") as held:
        assert held


def test_drop_orphan_checkpoints_keeps_the_run_checkpoint_only(tmp_path):
    from xstilts.trainables.trial import drop_orphan_checkpoints

    run = tmp_path / "abc-target"
    for name in ("checkpoint_2026-01-01_00-00-01.000001", "checkpoint_2026-01-01_00-00-02.000002"):
        (run / name).mkdir(parents=True)
        (run / name / "train_state.pt").write_bytes(b"x")
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    kept = run / "checkpoint_2026-01-01_00-00-02.000002"
    assert drop_orphan_checkpoints(str(kept)) == ["checkpoint_2026-01-01_00-00-01.000001"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_2026-01-01_00-00-02.000002", "checkpoint_manager_snapshot.json"]
    assert drop_orphan_checkpoints(str(tmp_path / "not-a-checkpoint")) == []  # only checkpoint_* folders are touched
