"""A study on Ray's fake multi-node autoscaler (xstilts.study.rehearsal), with storage on a real local S3
server: the cluster starts with zero worker nodes, `xstilts run --address ...` makes the
autoscaler launch them, every trial runs on a launched node and finishes, and the idle nodes are
released afterwards. The same pieces `python -m xstilts.study.rehearsal` runs for users.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from xstilts.study.config import DEFAULT_CONFIG

pytestmark = pytest.mark.e2e

BUCKET = "xstilts-autoscaler"


def test_study_scales_workers_up_from_zero_and_releases_them(tmp_path):
    from mlflow.tracking import MlflowClient

    from xstilts.study.rehearsal import FakeAutoscalingCluster, LocalS3Server

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="autoscaled", num_samples=2, max_concurrent_trials=2, target_tasks=["synthetic_xnli"],
               intermediate_tasks=["none", "synthetic_mnli"], storage_path=f"s3://{BUCKET}/studies",
               search_space={"intermediate_lr": {"type": "choice", "values": [0.001]},
                             "target_lr": {"type": "choice", "values": [0.001]}})
    raw["search"].update(scheduler="fifo", grace_period=1, each_intermediate_first=True)
    raw["training"].update(intermediate_epochs=1, target_epochs=1, max_train_examples=200, max_eval_examples=80)
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))

    with LocalS3Server(tmp_path / "s3") as s3:
        s3.create_bucket(BUCKET)
        env = {**os.environ, **s3.env, "HF_HUB_OFFLINE": "1"}
        # Worker nodes of 2 logical CPUs: a trial's process and its Ray Train worker fit on one.
        with FakeAutoscalingCluster(max_workers=2, cpus_per_worker_node=2, idle_timeout_minutes=0.25,
                                    extra_env=env) as cluster:
            assert cluster.worker_node_count() == 0
            head = cluster.head_node_id()
            seen: set[str] = set()
            stop = threading.Event()

            def watch():  # every worker node that was ever alive during the study
                while not stop.is_set():
                    try:
                        seen.update(cluster.worker_node_ids())
                    except Exception:  # noqa: BLE001 - a GCS read during a launch may fail: look again
                        pass
                    time.sleep(0.5)

            # A Train worker that fits on no node type (4 CPUs; worker nodes have 2) is refused
            # at once, before anything is written, instead of waiting forever.
            (tmp_path / "too_big.yaml").write_text(yaml.safe_dump(
                {**raw, "resources": {**raw["resources"], "cpus_per_worker": 4},
                 "mlflow": {**raw["mlflow"], "tracking_uri": f"sqlite:///{tmp_path / 'refused.db'}"}}))
            refused = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "too_big.yaml", "--address",
                                      cluster.address, "--name", "too-big"], cwd=tmp_path, capture_output=True,
                                     text=True, timeout=120, env={**env, **cluster.client_env})
            assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
            errors = [line for line in refused.stderr.splitlines() if "error" in line.lower()]  # Ray's INFO lines aside
            assert len(errors) == 1 and "resources.cpus_per_worker" in errors[0] and "Traceback" not in refused.stderr, refused.stderr
            assert "ray.worker.train: 2 CPU" in refused.stderr  # names the node types it could have used
            from pyarrow import fs

            written = s3.filesystem().get_file_info(fs.FileSelector(BUCKET, recursive=True))
            assert not (tmp_path / "refused.db").exists() and not written

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            submitted = time.monotonic()
            result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", "study.yaml", "--address",
                                     cluster.address, "--name", "autoscaled"], cwd=tmp_path, capture_output=True,
                                    text=True, timeout=900, env={**env, **cluster.client_env})
            stop.set()
            watcher.join(timeout=5)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            print(f"study on the autoscaler: {time.monotonic() - submitted:.0f}s, worker nodes launched: {len(seen)}")
            assert seen, "the autoscaler launched no worker node"

            client = MlflowClient(raw["mlflow"]["tracking_uri"])
            experiment = client.get_experiment_by_name("xstilts")
            trials = client.search_runs([experiment.experiment_id], filter_string="tags.`xstilts.run_kind` = 'trial'")
            assert len(trials) == 2
            assert all(r.info.status == "FINISHED" for r in trials), [r.data.tags.get("xstilts.error") for r in trials]
            trial_nodes = {r.data.tags["xstilts.ray_node_id"] for r in trials}
            assert head not in trial_nodes and trial_nodes <= seen  # trials ran on launched nodes

            released_after = cluster.wait_for_no_workers(timeout_s=180)
            print(f"idle worker nodes released {released_after:.0f}s after the study ended")
            assert cluster.worker_node_count() == 0
