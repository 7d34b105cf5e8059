"""The local cloud rehearsal's infrastructure (study/rehearsal.py), with real components only:
a real SeaweedFS S3 server and Ray's real autoscaler with its fake multi-node provider.

- S3: bucket, multipart writes (~8-12 MB) read back through pyarrow (the layer Ray Tune/Train
  and the storage layer use) and boto3, the AWS_* environment path, and refused credentials.
- Autoscaler: starts with zero worker nodes; a task needing TRAIN_DRIVER makes it launch one;
  the task runs there with the S3 environment (and reaches the bucket); the idle node is then
  released; stopping the cluster leaves no process of it behind.
"""
from __future__ import annotations

import io
import os
import time

import pytest

from xstilts.study.rehearsal import FakeAutoscalingCluster, port_answers
# tests/ is on sys.path under pytest's default import mode (test files without __init__.py), so this
# works with both `pytest` and `python -m pytest`, from any directory; `from tests.cloud_fixtures`
# works only with `python -m pytest` run from the repository root (tests/ is not a package).
from cloud_fixtures import IDLE_TIMEOUT_MINUTES, fake_cluster_with_s3, s3_server  # noqa: E402,F401

pytestmark = pytest.mark.e2e


def _boto3(s3, secret_key=None):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                        aws_access_key_id=s3.access_key, aws_secret_access_key=secret_key or s3.secret_key,
                        config=Config(retries={"max_attempts": 1}))


def test_multipart_roundtrip_pyarrow_and_boto3(s3_server):
    fs = s3_server.filesystem()
    bucket = s3_server.bucket
    # pyarrow: 12 MB goes up as a multipart upload (parts of 10 MB); boto3 reads it back.
    big = os.urandom(12 * 1024 * 1024)
    with fs.open_output_stream(f"{bucket}/pyarrow/big.bin") as out:
        out.write(big)
    client = _boto3(s3_server)
    assert client.get_object(Bucket=bucket, Key="pyarrow/big.bin")["Body"].read() == big

    # boto3: an explicit multipart upload (5 MB + 3 MB, the minimum part size is 5 MB); pyarrow reads it.
    data = os.urandom(8 * 1024 * 1024)
    upload = client.create_multipart_upload(Bucket=bucket, Key="boto3/big.bin")
    parts = []
    for number, chunk in enumerate((data[:5 * 1024 * 1024], data[5 * 1024 * 1024:]), start=1):
        part = client.upload_part(Bucket=bucket, Key="boto3/big.bin", PartNumber=number,
                                  UploadId=upload["UploadId"], Body=io.BytesIO(chunk))
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    client.complete_multipart_upload(Bucket=bucket, Key="boto3/big.bin", UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
    with fs.open_input_stream(f"{bucket}/boto3/big.bin") as stream:
        assert stream.read() == data
    listed = client.list_objects_v2(Bucket=bucket, Prefix="boto3/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("boto3/big.bin", len(data))]


def test_env_is_what_clients_need(s3_server, monkeypatch):
    """A plain s3:// URI works with nothing but the server's env (AWS_ENDPOINT_URL and keys)."""
    from pyarrow.fs import FileSystem

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    fs, path = FileSystem.from_uri(f"s3://{s3_server.bucket}/env/hello.txt")
    with fs.open_output_stream(path) as out:
        out.write(b"hello")
    with fs.open_input_stream(path) as stream:
        assert stream.read() == b"hello"


def test_wrong_credentials_are_refused(s3_server):
    from botocore.exceptions import ClientError
    from pyarrow import fs as pafs

    with pytest.raises(ClientError) as refused:
        _boto3(s3_server, secret_key="not-the-secret").put_object(Bucket=s3_server.bucket, Key="x", Body=b"x")
    assert refused.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"}
    stranger = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3_server.port}", scheme="http", region="us-east-1",
                                 access_key="nobody", secret_key="nothing")
    with pytest.raises(OSError):
        with stranger.open_output_stream(f"{s3_server.bucket}/stranger.txt") as out:
            out.write(b"x")
    assert not any(info.base_name == "stranger.txt"
                   for info in s3_server.filesystem().get_file_info(pafs.FileSelector(s3_server.bucket)))


def test_autoscaler_launches_a_node_for_train_driver_and_releases_it(fake_cluster_with_s3, s3_server):
    import ray

    cluster = fake_cluster_with_s3
    assert cluster.worker_node_count() == 0, "the cluster starts with the head only"
    head = cluster.head_node_id()
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        @ray.remote(num_cpus=0, resources={"TRAIN_DRIVER": 1})
        def where_am_i(bucket: str):
            from pyarrow.fs import FileSystem

            node = ray.get_runtime_context().get_node_id()
            # The node's processes have the S3 environment: a plain s3:// URI reaches the bucket.
            fs, path = FileSystem.from_uri(f"s3://{bucket}/from-worker/{node}.txt")
            with fs.open_output_stream(path) as out:
                out.write(b"hello from a worker node")
            return node, os.environ.get("AWS_ENDPOINT_URL")

        submitted = time.monotonic()
        result = where_am_i.remote(s3_server.bucket)
        launched_s = cluster.wait_for_workers(1, timeout_s=90)
        node, endpoint = ray.get(result, timeout=90)
        ran_s = time.monotonic() - submitted
        print(f"\nscale-up: worker node alive {launched_s:.1f} s after submission, task done after {ran_s:.1f} s")
        assert node != head and node in cluster.worker_node_ids()
        assert endpoint == s3_server.endpoint_url
        assert s3_server.filesystem().get_file_info(f"{s3_server.bucket}/from-worker/{node}.txt").size > 0

        released_s = cluster.wait_for_no_workers(timeout_s=IDLE_TIMEOUT_MINUTES * 60 + 60)
        print(f"release: idle worker node gone {released_s:.1f} s after the task ended "
              f"(idle_timeout_minutes={IDLE_TIMEOUT_MINUTES})")
        assert cluster.worker_node_count() == 0
    finally:
        ray.shutdown()


def test_stopping_the_cluster_ends_head_and_worker_nodes():
    import ray

    cluster = FakeAutoscalingCluster(max_workers=1, idle_timeout_minutes=5).start()
    try:
        ray.init(address=cluster.address, logging_level="ERROR")

        @ray.remote(num_cpus=0, resources={"TRAIN_DRIVER": 1})
        def one():
            return 1

        assert ray.get(one.remote(), timeout=90) == 1
        assert cluster.worker_node_count() == 1  # idle, but the 5-minute timeout keeps it
        assert len(cluster.leftover_processes()) > 2
    finally:
        ray.shutdown()
        cluster.stop()
    assert cluster.leftover_processes() == []
    assert not port_answers(cluster.gcs_port)
    assert not cluster.temp_dir.exists()


def test_rehearsal_command_refuses_bad_input_before_starting_anything(capsys):
    from xstilts.study.rehearsal import main

    assert main(["--config", "/nonexistent/study.yaml"]) == 2
    assert main(["--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "--config /nonexistent/study.yaml: no such file" in err and "--workers" in err
