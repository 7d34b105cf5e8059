"""One training phase inside Ray Train workers: the function `TorchTrainer` runs on each worker.

Phase 2 (intermediate) and phase 3 (target) are the same loop on different tasks: a fresh head
on the encoder at `init_path`, AdamW with linear warm-up, length-grouped dynamically padded
batches sharded across workers, an English dev evaluation and a checkpoint every epoch, and
(phase 3) zero-shot evaluation on every language of the task after the last epoch.

A worker that dies is restarted by Ray Train (FailureConfig) and resumes from the last reported
checkpoint: the epoch counter and optimizer state come back with it, so no epoch's metrics are
reported twice.
"""
from __future__ import annotations

import os
import random
import tempfile
import time

import torch

from tasks import DataOptions, get_task
from tasks.modeling import batches_by_length, collate, encode, evaluate, load_model_for_task, majority_baseline
from trainables.config import PhaseConfig

TRAIN_STATE = "train_state.pt"
ENCODER_DIR = "encoder"  # phase 2 also saves its encoder alone: phase 3 puts a fresh head on it


def _log_to_mlflow(cfg: PhaseConfig, metrics: dict[str, float], step: int) -> None:
    if not (cfg.mlflow_tracking_uri and cfg.mlflow_run_id):
        return
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    MlflowClient(cfg.mlflow_tracking_uri).log_batch(
        cfg.mlflow_run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
    )


def _epoch_batches(features, batch_size: int, seed: int, epoch: int, rank: int, world: int):
    """This worker's batches for one epoch: length-grouped, batch order shuffled per epoch."""
    batches = batches_by_length(features, batch_size)
    random.Random(seed * 1000 + epoch).shuffle(batches)
    usable = len(batches) - len(batches) % world or len(batches)  # equal step counts under DDP
    return batches[:usable][rank::world]


def train_phase(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import transformers
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    transformers.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = PhaseConfig.from_dict(config)
    opts = cfg.training
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)

    task = get_task(cfg.task)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_path)
    model = load_model_for_task(task, cfg.init_path)
    train_examples = task.load("train", task.train_language, DataOptions(cfg.data_dir, opts.max_train_examples, cfg.seed))
    eval_options = DataOptions(cfg.data_dir, opts.max_eval_examples, cfg.seed)
    dev_en = task.load("dev", task.train_language, eval_options)
    features = encode(task, train_examples, tokenizer, opts.max_length)

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
            start_epoch = state["epoch"] + 1

    model = ray.train.torch.prepare_model(model)
    bare_model = model.module if hasattr(model, "module") else model
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    prefix = "intermediate/" if cfg.phase == "intermediate" else ""

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        started, losses, tokens = time.time(), [], 0
        batches = _epoch_batches(features, opts.batch_size, cfg.seed, epoch, rank, world)
        for step, indices in enumerate(batches):
            batch = {k: v.to(device) for k, v in collate([features[i] for i in indices], tokenizer.pad_token_id).items()}
            tokens += int(batch["attention_mask"].sum())
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(**batch).loss / opts.gradient_accumulation_steps
            loss.backward()
            losses.append(float(loss) * opts.gradient_accumulation_steps)
            if (step + 1) % opts.gradient_accumulation_steps == 0 or step + 1 == len(batches):
                torch.nn.utils.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
        seconds = time.time() - started
        if any(not torch.isfinite(torch.tensor(l)) for l in losses):
            raise FloatingPointError(f"{cfg.phase} phase on {cfg.task}: the training loss became NaN/inf at epoch {epoch + 1}; lower the learning rate ({cfg.learning_rate:g})")

        metrics: dict[str, float] = {
            f"{prefix}epoch": epoch + 1,
            f"{prefix}train_loss": sum(losses) / max(1, len(losses)),
            f"{prefix}train_tokens_per_s": tokens * world / max(seconds, 1e-9),
        }
        if cfg.phase == "target":
            metrics["target_epoch"] = epoch + 1  # ASHA's time attribute (survives Train restarts)
        checkpoint_dir = None
        if rank == 0:
            dev_scores = evaluate(task, bare_model, tokenizer, dev_en, opts.eval_batch_size, device, opts.max_length)
            for name, value in dev_scores.items():
                metrics[f"{prefix}dev/{task.train_language}/{name}"] = value
            metrics[f"{prefix}en_dev_score"] = dev_scores[task.metric]
            last = epoch + 1 == cfg.epochs
            if last and cfg.phase == "target":
                metrics.update(_zero_shot(task, bare_model, tokenizer, cfg, eval_options, train_examples, device))
            _log_to_mlflow(cfg, {k: v for k, v in metrics.items() if not k.startswith("final/")}, epoch + 1)
            checkpoint_dir = tempfile.mkdtemp(prefix="xstilts-ckpt-")
            bare_model.save_pretrained(checkpoint_dir)
            tokenizer.save_pretrained(checkpoint_dir)
            if last and cfg.phase == "intermediate":
                bare_model.base_model.save_pretrained(os.path.join(checkpoint_dir, ENCODER_DIR))
                tokenizer.save_pretrained(os.path.join(checkpoint_dir, ENCODER_DIR))
            torch.save({"model": bare_model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch},
                       os.path.join(checkpoint_dir, TRAIN_STATE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)


def _zero_shot(task, model, tokenizer, cfg: PhaseConfig, options: DataOptions, train_examples, device) -> dict[str, float]:
    """Every language of the target, scored with the shared metrics, plus the majority-class score."""
    results: dict[str, float] = {}
    for language in task.languages:
        examples = task.load("dev", language, options)
        for name, value in evaluate(task, model, tokenizer, examples, cfg.training.eval_batch_size, device, cfg.training.max_length).items():
            results[f"final/dev/{language}/{name}"] = value
        results[f"final/chance/{language}/{task.metric}"] = majority_baseline(task, train_examples, examples)[task.metric]
    zero_shot = [results[f"final/dev/{l}/{task.metric}"] for l in task.languages if l != task.train_language]
    results["final/en_dev_score"] = results[f"final/dev/{task.train_language}/{task.metric}"]
    if zero_shot:
        results["final/zero_shot_mean"] = sum(zero_shot) / len(zero_shot)
    results["final/all_languages_mean"] = sum(results[f"final/dev/{l}/{task.metric}"] for l in task.languages) / len(task.languages)
    return results
