"""Ray Train resilience, for real: a TorchTrainer of `train_phase` in a local Ray, its training
worker SIGKILLed mid-run, and the run must resume from its last checkpoint with every epoch
reported exactly once (to Ray Train, to MLflow and in the checkpoints) and complete results."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

EPOCHS = 4
KILL_AFTER_EPOCH = 2  # the kill lands while epoch 3 trains (epochs 3-4 are the margin, ~1 s each)


def _records(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _make_callback(path: str):
    from ray.train import UserCallback

    class RegisteredEpochs(UserCallback):
        """Runs in the Train controller: the epochs it registered (what a restart resumes from)."""

        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as out:
                out.write(json.dumps({"epoch": metrics[0]["epoch"], "checkpoint": bool(checkpoint), "time": time.time()}) + "\n")

    return RegisteredEpochs()


def _killer(progress_file: str, done: threading.Event, killed: list) -> None:
    """SIGKILL the rank-0 training worker right after it reports epoch KILL_AFTER_EPOCH."""
    while not done.is_set():
        for record in _records(progress_file):
            if record["event"] == "epoch" and record["epoch"] == KILL_AFTER_EPOCH:
                os.kill(record["pid"], signal.SIGKILL)
                killed.append(record["pid"])
                return
        time.sleep(0.02)


@pytest.mark.e2e
def test_killed_worker_resumes_from_last_checkpoint(tmp_path, monkeypatch):
    import ray
    import ray.train
    from mlflow.tracking import MlflowClient
    from ray.train.torch import TorchTrainer

    from xstilts.trainables.config import PhaseConfig, TrainingOptions
    from xstilts.trainables.embedded_model import EmbeddedModelSpec, ensure_embedded_model
    from xstilts.trainables.train_loop import PROGRESS_FILE_ENV, train_phase

    started = time.time()
    # Untrained (no MLM steps): this test is about resuming, not accuracy; builds in ~3 s.
    model = ensure_embedded_model(tmp_path / "models", EmbeddedModelSpec(mlm_steps=0), log=lambda *a: None)
    progress, registered = str(tmp_path / "progress.jsonl"), str(tmp_path / "registered.jsonl")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("resume")).info.run_id

    env = {PROGRESS_FILE_ENV: progress, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "TOKENIZERS_PARALLELISM": "false"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    phase = PhaseConfig(
        phase="target", task="synthetic_xnli", init_path=model, tokenizer_path=model, learning_rate=1e-3,
        epochs=EPOCHS, seed=0, mlflow_tracking_uri=uri, mlflow_run_id=run_id,
        # batch 8 over 1000 examples: 125 steps, ~1 s an epoch on a 2-core machine
        training=TrainingOptions(batch_size=8, target_epochs=EPOCHS, max_train_examples=1000, max_eval_examples=200),
        feature_cache_dir=str(tmp_path / "feature_cache"),
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_killer, args=(progress, done, killed), daemon=True)
    killer.start()
    try:
        trainer = TorchTrainer(
            train_phase, train_loop_config=phase.to_dict(),
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(
                name="resume", storage_path=str(tmp_path / "runs"),
                failure_config=ray.train.FailureConfig(max_failures=2),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),
                callbacks=[_make_callback(registered)],
            ),
        )
        result = trainer.fit()
    finally:
        done.set()
        ray.shutdown()
    killer.join(timeout=5)

    assert killed, "the worker was never killed (the run ended before epoch %d was reported?)" % KILL_AFTER_EPOCH
    assert result.error is None, result.error
    starts = [r for r in _records(progress) if r["event"] == "start"]
    # The first attempt and a restart after the kill (more only if Ray itself restarted a worker).
    pids = [r["pid"] for r in starts]
    assert len(starts) >= 2 and killed[0] in pids[:-1], starts
    after_kill = starts[pids.index(killed[0]) + 1]
    # Every restart resumed from the last checkpoint the controller had registered when it began,
    # never from scratch: after our kill that is epoch 2, or epoch 1 if the kill beat the
    # controller's poll of epoch 2's report.
    for restart in starts[1:]:
        registered_before = [r["epoch"] for r in _records(registered) if r["time"] < restart["time"]]
        assert restart["start_epoch"] == max(registered_before, default=0), (registered_before, starts)
    assert after_kill["start_epoch"] >= 1

    expected = list(range(1, EPOCHS + 1))
    # Ray Train registered every epoch exactly once, each with a checkpoint.
    assert [r["epoch"] for r in _records(registered)] == expected
    assert all(r["checkpoint"] for r in _records(registered))
    assert sorted(result.metrics_dataframe["epoch"].tolist()) == expected
    # MLflow got every epoch exactly once: no duplicate from the redone epoch, no gap.
    for metric in ("epoch", "en_dev_score", "train_loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, metric)) == expected, metric
    assert [m.value for m in sorted(client.get_metric_history(run_id, "epoch"), key=lambda m: m.step)] == expected
    # The final result is complete: zero-shot scores of every language and a loadable checkpoint.
    assert result.metrics["epoch"] == EPOCHS
    for language in ("en", "near", "mid", "far"):
        assert 0 <= result.metrics[f"final/dev/{language}/accuracy"] <= 100
    assert {"config.json", "model.safetensors", "train_state.pt"} <= set(os.listdir(result.checkpoint.path))
    print(f"resume test took {time.time() - started:.1f}s; restart began at epoch {after_kill['start_epoch'] + 1}")
    for record in _records(progress):
        print(f"  {record['time'] - started:6.1f}s {record}")


def test_an_epoch_redone_after_a_crash_is_logged_once(tmp_path):
    """The worker logs an epoch, dies before Ray Train registers its checkpoint, and the restart
    redoes that epoch: MLflow keeps the first record and gets no second one."""
    from mlflow.tracking import MlflowClient

    from xstilts.trainables.config import PhaseConfig, TrainingOptions
    from xstilts.trainables.train_loop import _log_to_mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("once")).info.run_id
    cfg = PhaseConfig(phase="intermediate", task="synthetic_mnli", init_path="m", tokenizer_path="m", learning_rate=1e-3,
                      epochs=3, seed=0, training=TrainingOptions(), mlflow_tracking_uri=uri, mlflow_run_id=run_id)
    key = "intermediate/epoch"
    assert _log_to_mlflow(cfg, {key: 1, "intermediate/train_loss": 0.9}, 1, once_key=key)
    assert _log_to_mlflow(cfg, {key: 2, "intermediate/train_loss": 0.7}, 2, once_key=key)
    assert not _log_to_mlflow(cfg, {key: 2, "intermediate/train_loss": 0.6}, 2, once_key=key)  # the redone epoch
    assert _log_to_mlflow(cfg, {key: 3, "intermediate/train_loss": 0.5}, 3, once_key=key)
    history = sorted(client.get_metric_history(run_id, "intermediate/train_loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.7), (3, 0.5)]
    # Another phase's epochs in the same trial run are counted apart (phase 3 after phase 2).
    target = PhaseConfig(**{**cfg.to_dict(), "phase": "target", "training": cfg.training})
    assert _log_to_mlflow(target, {"epoch": 1}, 1, once_key="epoch")
    # Without a run to log to, nothing is logged and nothing fails.
    assert not _log_to_mlflow(PhaseConfig(**{**cfg.to_dict(), "mlflow_run_id": None, "training": cfg.training}),
                              {"epoch": 1}, 1, once_key="epoch")
