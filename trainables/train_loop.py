"""One training phase inside Ray Train workers: the function `TorchTrainer` runs on each worker.

Phase 2 (intermediate) and phase 3 (target) are the same loop on different tasks: a fresh head
on the encoder at `init_path`, AdamW with linear warm-up, length-grouped dynamically padded
batches sharded across workers, an English dev evaluation and a checkpoint every epoch, and
(phase 3) zero-shot evaluation on every language of the task after the last epoch.

Tokenized splits come from the feature cache when `feature_cache_dir` is set (encoded once per
storage path, then read back by every trial); on a hit the training examples are not even loaded.

A worker that dies is restarted by Ray Train (FailureConfig) and resumes from the last reported
checkpoint: the epoch counter, optimizer, scheduler and RNG states come back with it. Per-epoch
MLflow metrics are logged at most once per epoch (the epoch metric is checked first), so an
epoch redone after a crash is not recorded twice.

Checkpoints: every epoch holds `TRAIN_STATE` (model, optimizer, scheduler, RNG, epoch: what a
restart needs); the last epoch also holds the model and tokenizer as a `save_pretrained` folder
(what export and phase 3 read) and, in phase 2, the encoder alone under `ENCODER_DIR`.

Test hook: with the environment variable XSTILTS_PROGRESS_FILE set, rank 0 appends one JSON line
per attempt start and per reported epoch (pid, epoch) to that file.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import random
import shutil
import tempfile
import time

import torch

from tasks import DataOptions, get_task
from tasks.modeling import (batches_by_length, collate, evaluate, load_model_for_task, majority_baseline, predict,
                            score)
from trainables.config import PhaseConfig
from trainables.feature_cache import cached_encode

TRAIN_STATE = "train_state.pt"
ENCODER_DIR = "encoder"  # phase 2 also saves its encoder alone: phase 3 puts a fresh head on it
PROGRESS_FILE_ENV = "XSTILTS_PROGRESS_FILE"


def _mlflow_client(cfg: PhaseConfig):
    if not (cfg.mlflow_tracking_uri and cfg.mlflow_run_id):
        return None
    from mlflow.tracking import MlflowClient

    return MlflowClient(cfg.mlflow_tracking_uri)


def _log_to_mlflow(cfg: PhaseConfig, metrics: dict[str, float], step: int, once_key: str | None = None) -> bool:
    """Log one epoch's metrics; with `once_key`, skip when that metric already has this step
    (the epoch was logged by an attempt that died before its checkpoint was registered)."""
    client = _mlflow_client(cfg)
    if client is None:
        return False
    from mlflow.entities import Metric

    if once_key and any(m.step == step for m in client.get_metric_history(cfg.mlflow_run_id, once_key)):
        return False
    now = int(time.time() * 1000)
    client.log_batch(cfg.mlflow_run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
    return True


def _progress(event: str, **fields) -> None:
    path = os.environ.get(PROGRESS_FILE_ENV)
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields}) + "\n")


def _epoch_batches(features, batch_size: int, seed: int, epoch: int, rank: int, world: int):
    """This worker's batches for one epoch: length-grouped, batch order shuffled per epoch."""
    batches = batches_by_length(features, batch_size)
    random.Random(seed * 1000 + epoch).shuffle(batches)
    usable = len(batches) - len(batches) % world or len(batches)  # equal step counts under DDP
    return batches[:usable][rank::world]


_EVALUATE_PARAMS = inspect.signature(evaluate).parameters
_BASELINE_PARAMS = inspect.signature(majority_baseline).parameters


def _scores_from_features(task) -> bool:
    """Whether dev sets can be scored from (cached) features: `evaluate(features=...)` or the kinds
    whose predict + score is exactly `evaluate`."""
    return "features" in _EVALUATE_PARAMS or task.kind in ("classification", "tagging")


def _evaluate(task, model, tokenizer, examples, features, language: str, cfg: PhaseConfig, device) -> dict[str, float]:
    opts = cfg.training
    extra = {"language": language} if "language" in _EVALUATE_PARAMS else {}
    if features is None:
        return evaluate(task, model, tokenizer, examples, opts.eval_batch_size, device, opts.max_length, **extra)
    if "features" in _EVALUATE_PARAMS:
        return evaluate(task, model, tokenizer, examples, opts.eval_batch_size, device, opts.max_length,
                        features=features, **extra)
    return score(task, predict(task, model, features, tokenizer.pad_token_id, opts.eval_batch_size, device), examples)


def _majority_baseline(task, train_examples: list, examples: list, language: str) -> dict[str, float]:
    extra = {"language": language} if "language" in _BASELINE_PARAMS else {}
    return majority_baseline(task, train_examples, examples, **extra)


class _DevSet:
    """One dev split: examples (for scoring) and features (encoded once, through the cache)."""

    def __init__(self, task, language: str, options: DataOptions, tokenizer, cfg: PhaseConfig):
        self.language = language
        self.examples = task.load("dev", language, options)
        self.features = None
        if _scores_from_features(task):
            self.features, _ = cached_encode(cfg.feature_cache_dir, task, "dev", language, options, tokenizer,
                                             cfg.tokenizer_path, cfg.training.max_length, self.examples)

    def score(self, task, model, tokenizer, cfg: PhaseConfig, device) -> dict[str, float]:
        return _evaluate(task, model, tokenizer, self.examples, self.features, self.language, cfg, device)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict | None) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_phase(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import transformers
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    setup_started = time.time()
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = PhaseConfig.from_dict(config)
    opts = cfg.training
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)

    train_options = cfg.data_options(opts.max_train_examples)
    eval_options = cfg.data_options(opts.max_eval_examples)
    task = get_task(cfg.task)
    if hasattr(task, "resolved"):  # labels read from the data (CCG supertags)
        task = task.resolved(train_options)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_path)
    model = load_model_for_task(task, cfg.init_path)
    loaded: dict[str, list] = {}

    def train_examples() -> list:  # loaded only on a feature-cache miss, or for the majority baseline
        if "train" not in loaded:
            loaded["train"] = task.load("train", task.train_language, train_options)
        return loaded["train"]

    features, cache_hit = cached_encode(cfg.feature_cache_dir, task, "train", task.train_language, train_options,
                                        tokenizer, cfg.tokenizer_path, opts.max_length, train_examples)
    dev_en = _DevSet(task, task.train_language, eval_options, tokenizer, cfg) if rank == 0 else None

    steps_per_epoch = max(1, len(_epoch_batches(features, opts.batch_size, cfg.seed, 0, rank, world))
                          // opts.gradient_accumulation_steps)
    total_steps = steps_per_epoch * cfg.epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": opts.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(opts.warmup_ratio * total_steps), total_steps)

    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a restarted worker: continue after the last reported epoch
        with checkpoint.as_directory() as directory:
            state = torch.load(os.path.join(directory, TRAIN_STATE), map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state.get("rng"))
            start_epoch = state["epoch"] + 1

    model = ray.train.torch.prepare_model(model)
    bare_model = model.module if hasattr(model, "module") else model
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    prefix = "intermediate/" if cfg.phase == "intermediate" else ""
    setup_seconds = time.time() - setup_started
    if rank == 0:
        _progress("start", phase=cfg.phase, start_epoch=start_epoch, setup_seconds=setup_seconds,
                  feature_cache_hit=cache_hit, threads=torch.get_num_threads())

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        started, tokens, steps = time.time(), 0, 0
        loss_sum = torch.zeros((), device=device)
        batches = _epoch_batches(features, opts.batch_size, cfg.seed, epoch, rank, world)
        for step, indices in enumerate(batches):
            cpu_batch = collate([features[i] for i in indices], tokenizer.pad_token_id)
            tokens += int(cpu_batch["attention_mask"].sum())  # counted on the host: no device sync
            batch = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
            with autocast():
                loss = model(**batch).loss
            if opts.gradient_accumulation_steps > 1:
                loss = loss / opts.gradient_accumulation_steps
            loss.backward()
            loss_sum += loss.detach().float()
            steps += 1
            if (step + 1) % opts.gradient_accumulation_steps == 0 or step + 1 == len(batches):
                torch.nn.utils.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        train_loss = float(loss_sum) * opts.gradient_accumulation_steps / max(1, steps)  # one sync per epoch
        seconds = time.time() - started
        if not torch.isfinite(torch.tensor(train_loss)):
            raise FloatingPointError(f"{cfg.phase} phase on {cfg.task}: the training loss became NaN/inf at epoch {epoch + 1}; lower the learning rate ({cfg.learning_rate:g})")

        metrics: dict[str, float] = {
            f"{prefix}epoch": epoch + 1,
            f"{prefix}train_loss": train_loss,
            f"{prefix}train_tokens_per_s": tokens * world / max(seconds, 1e-9),
            f"{prefix}train_seconds": seconds,
            f"{prefix}setup_seconds": setup_seconds,
        }
        if cache_hit is not None:
            metrics[f"{prefix}feature_cache_hit"] = float(cache_hit)
        if cfg.phase == "target":
            metrics["target_epoch"] = epoch + 1  # ASHA's time attribute (survives Train restarts)
        checkpoint_dir = None
        try:
            if rank == 0:
                dev_scores = dev_en.score(task, bare_model, tokenizer, cfg, device)
                for name, value in dev_scores.items():
                    metrics[f"{prefix}dev/{task.train_language}/{name}"] = value
                metrics[f"{prefix}en_dev_score"] = dev_scores[task.metric]
                last = epoch + 1 == cfg.epochs
                if last and cfg.phase == "target":
                    metrics.update(_zero_shot(task, bare_model, tokenizer, cfg, eval_options, train_examples, device, dev_en))
                _log_to_mlflow(cfg, {k: v for k, v in metrics.items() if not k.startswith("final/")}, epoch + 1,
                               once_key=f"{prefix}epoch")
                checkpoint_dir = tempfile.mkdtemp(prefix="xstilts-ckpt-")
                if last:
                    bare_model.save_pretrained(checkpoint_dir)
                    tokenizer.save_pretrained(checkpoint_dir)
                    if cfg.phase == "intermediate":
                        bare_model.base_model.save_pretrained(os.path.join(checkpoint_dir, ENCODER_DIR))
                        tokenizer.save_pretrained(os.path.join(checkpoint_dir, ENCODER_DIR))
                torch.save({"model": bare_model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": _rng_state()},
                           os.path.join(checkpoint_dir, TRAIN_STATE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)
        finally:
            if checkpoint_dir:  # report() has copied it to the run's storage (synchronous upload)
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
        if rank == 0:
            _progress("epoch", phase=cfg.phase, epoch=epoch + 1)


def _zero_shot(task, model, tokenizer, cfg: PhaseConfig, options: DataOptions, train_examples, device,
               dev_en: _DevSet | None = None) -> dict[str, float]:
    """Every language of the target, scored with the shared metrics, plus the majority-class score."""
    results: dict[str, float] = {}
    train = train_examples() if callable(train_examples) else train_examples
    # Languages with no local evaluation file (a partial copy of a benchmark) are left out, and
    # every average below is over the languages that were scored.
    languages = [l for l in task.languages if l == task.train_language or task.has_data("dev", l, options)]
    for language in languages:
        dev = dev_en if dev_en is not None and language == task.train_language else _DevSet(task, language, options, tokenizer, cfg)
        for name, value in dev.score(task, model, tokenizer, cfg, device).items():
            results[f"final/dev/{language}/{name}"] = value
        results[f"final/chance/{language}/{task.metric}"] = _majority_baseline(task, train, dev.examples, language)[task.metric]
    zero_shot = [results[f"final/dev/{l}/{task.metric}"] for l in languages if l != task.train_language]
    results["final/en_dev_score"] = results[f"final/dev/{task.train_language}/{task.metric}"]
    if zero_shot:
        results["final/zero_shot_mean"] = sum(zero_shot) / len(zero_shot)
    results["final/all_languages_mean"] = sum(results[f"final/dev/{l}/{task.metric}"] for l in languages) / len(languages)
    return results
