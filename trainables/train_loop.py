"""One training phase inside Ray Train workers: the function `TorchTrainer` runs on each worker.

Phase 2 (intermediate) and phase 3 (target) are the same loop on different tasks: a fresh head
on the encoder at `init_path`, AdamW with linear warm-up, length-grouped dynamically padded
batches sharded across workers, an English dev evaluation and a checkpoint every epoch, and
(phase 3) zero-shot evaluation on every language of the task after the last epoch.

What a phase trains on is a list of sources, "task@lang" training splits (`PhaseConfig.sources`;
one source, the task's English split, by default). Several sources are mixed step by step with
proportional or temperature sampling (`xstilts.trainables.multitask.mixture_steps`); several distinct
tasks get one head each on a shared encoder, and phase 2 can add an MLM auxiliary loss
(`xstilts.trainables.multitask`). Phase 3 with translate-train is one task over several languages. A
phase-2 task without an English dev split validates on a subset held out of its training data.
With `early_stopping_patience`, a phase stops once English dev stops improving and goes on from
its best epoch's weights.

Tokenized splits come from the feature cache when `feature_cache_dir` is set (encoded once per
storage path, then read back by every trial); on a hit the training examples are not even loaded.

A worker that dies is restarted by Ray Train (FailureConfig) and resumes from the last reported
checkpoint: the epoch counter, optimizer, scheduler and RNG states come back with it. Per-epoch
MLflow metrics are logged at most once per epoch (the epoch metric is checked first), so an
epoch redone after a crash is not recorded twice.

Checkpoints: every epoch holds `TRAIN_STATE` (model, optimizer, scheduler, RNG, epoch: what a
restart needs); the last epoch also holds the model and tokenizer as a `save_pretrained` folder
(what export and phase 3 read) and, in phase 2, the encoder alone under `ENCODER_DIR`.

The parts, each a plain function or dataclass that runs without Ray: the phase's data
(`xstilts.trainables.phase_data.load_phase_data`), the model (`build_model`), the optimiser state
that saves and restores (`TrainState`), one epoch's plan (`epoch_plan`) and training
(`train_epoch`), one evaluation (`evaluate_epoch`) and the checkpoint (`save_checkpoint`).
`run_phase` wires them; what Ray Train provides (rank, world size, device, the checkpoint to
restore, DDP, report) comes in through a `PhaseRuntime`: `ray_runtime()` inside Ray Train
(`train_phase`, what `TorchTrainer` runs), `local_runtime()` in a plain process.

Test hook: with the environment variable XSTILTS_PROGRESS_FILE set, rank 0 appends one JSON line
per attempt start and per reported epoch (pid, epoch) to that file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from xstilts.storage import to_local
from xstilts.tasks.modeling import batches_by_length, collate, freeze_embeddings, load_model_for_task, pad_sequences
from xstilts.tasks.mixture import TaskMixture
from xstilts.tasks.record_schema import EPOCH_EN_DEV, EXAMPLE_STATS_ARTIFACT, FINAL_PREFIX, INTERMEDIATE_PREFIX, TARGET_EPOCH
from xstilts.trainables.config import PhaseConfig
from xstilts.trainables.multitask import build_multitask_model, mask_tokens, mixture_steps, source_probabilities
from xstilts.trainables.phase_data import PhaseData, Source, load_phase_data, zero_shot

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

    from xstilts.mlflow_store.retry import call_with_retry

    # The timestamp is fixed outside the retry: a log_batch repeated after an outage writes the
    # same points, and the once_key check runs again on every attempt.
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def log_once() -> bool:
        if once_key and any(m.step == step for m in client.get_metric_history(cfg.mlflow_run_id, once_key)):
            return False
        client.log_batch(cfg.mlflow_run_id, metrics=batch)
        return True

    return call_with_retry(log_once, what=f"logging epoch {step} metrics")


def _log_example_stats(cfg: PhaseConfig, metric: str, stats: dict) -> None:
    """The final evaluation's per-example statistics as a small JSON artifact of the trial's run
    ({"metric", "languages": {language: [[numerator, denominator], ...]}}, in dev-file order):
    what the report resamples for intervals over examples."""
    client = _mlflow_client(cfg)
    if client is None or not stats:
        return
    from xstilts.mlflow_store.retry import call_with_retry

    body = {"metric": metric, "languages": {lang: [[round(v, 6), round(w, 6)] for v, w in pairs]
                                            for lang, pairs in stats.items()}}
    call_with_retry(lambda: client.log_dict(cfg.mlflow_run_id, body, EXAMPLE_STATS_ARTIFACT),
                    what="logging the per-example statistics")


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



# ---------------------------------------------------------------------------------------------
# What the launcher provides
# ---------------------------------------------------------------------------------------------

@dataclass
class PhaseRuntime:
    """What a phase gets from the process that runs it (Ray Train, or a plain process)."""

    rank: int = 0
    world: int = 1
    device: Any = "cpu"
    # (metrics, checkpoint folder or None): the folder is removed when it returns.
    report: Callable[[dict, str | None], None] = lambda metrics, folder: None
    restore_state: Callable[[], dict | None] = lambda: None  # the TRAIN_STATE to resume from
    prepare_model: Callable[[Any, bool], Any] = lambda model, multi: model  # (model, multi-head) -> wrapped
    broadcast: Callable[[bool], bool] = lambda flag: flag  # rank 0's decision, on every worker


def _load_state(folder: str) -> dict:
    # weights_only: tensors, dicts, lists, tuples and numbers only (what the state holds), so a
    # crafted checkpoint file cannot run code when it is loaded.
    return torch.load(os.path.join(folder, TRAIN_STATE), map_location="cpu", weights_only=True)


def ray_runtime() -> PhaseRuntime:
    """Inside a Ray Train worker: its rank, device, DDP, checkpoint and report."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    world, device = context.get_world_size(), ray.train.torch.get_device()

    def restore_state() -> dict | None:
        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return None
        with checkpoint.as_directory() as directory:
            return _load_state(directory)

    def prepare_model(model, multi: bool):
        if multi:  # a step uses one head: the other heads' parameters get no gradient on that step
            return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
        return ray.train.torch.prepare_model(model)

    def report(metrics: dict, folder: str | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)

    return PhaseRuntime(context.get_world_rank(), world, device, report, restore_state, prepare_model,
                        lambda flag: _broadcast_flag(flag, world, device))


def local_runtime(resume_from: str | None = None, keep_checkpoints: str | None = None) -> tuple[PhaseRuntime, list]:
    """One process, rank 0 of 1, on CPU: (runtime, reports). Each report is appended as
    (metrics, kept checkpoint folder or None); with `keep_checkpoints`, checkpoints are copied
    under it as epoch-<n>; `resume_from` is such a folder to restore from."""
    reports: list = []

    def report(metrics: dict, folder: str | None) -> None:
        kept = None
        if folder and keep_checkpoints:
            kept = os.path.join(keep_checkpoints, f"epoch-{len(reports) + 1}")
            shutil.copytree(folder, kept)
        reports.append((dict(metrics), kept))

    restore = (lambda: _load_state(resume_from)) if resume_from else (lambda: None)
    return PhaseRuntime(device=torch.device("cpu"), report=report, restore_state=restore), reports


# ---------------------------------------------------------------------------------------------
# The model and its training state
# ---------------------------------------------------------------------------------------------

def build_model(cfg: PhaseConfig, data: PhaseData):
    """(model, frozen parameter count): one head, or one head per task on a shared encoder."""
    if data.multi:
        model = build_multitask_model(list(data.tasks.values()), cfg.init_path, with_mlm=data.with_mlm)
    else:
        model = load_model_for_task(data.task, cfg.init_path)
    frozen = freeze_embeddings(model.encoder if data.multi else model) if cfg.training.freeze_embeddings else 0
    return model, frozen


def _fresh_stopping() -> dict:
    return {"best_score": None, "best_epoch": None, "bad_epochs": 0, "best_model": None}


@dataclass
class TrainState:
    """The optimiser side of a phase: what a restarted worker needs besides the data."""

    optimizer: Any
    scheduler: Any
    start_epoch: int = 0
    stopping: dict = field(default_factory=_fresh_stopping)

    @classmethod
    def create(cls, cfg: PhaseConfig, model, steps_per_epoch: int) -> "TrainState":
        from transformers import get_linear_schedule_with_warmup

        opts = cfg.training
        total_steps = steps_per_epoch * cfg.epochs
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in trainable if not n.endswith(no_decay)], "weight_decay": opts.weight_decay},
            {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
        return cls(optimizer, get_linear_schedule_with_warmup(optimizer, int(opts.warmup_ratio * total_steps), total_steps))

    def restore(self, saved: dict | None, model, epochs: int) -> None:
        """Continue after the saved epoch (a stopped phase: nothing is left to train)."""
        if not saved:
            return
        self.start_epoch = epochs if saved.get("stopped") else saved["epoch"] + 1
        if not saved.get("stopped"):
            model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            _set_rng_state(saved.get("rng"))
            self.stopping.update(saved.get("early_stopping") or {})

    def saved(self, model, epoch: int, last: bool, early_stopping: bool) -> dict:
        """What TRAIN_STATE holds after `epoch`: on the last one only that it stopped (the model is
        in the save_pretrained files then)."""
        if last:
            return {"epoch": epoch, "stopped": True}
        return {"model": model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": epoch, "rng": _rng_state(),
                "early_stopping": dict(self.stopping) if early_stopping else None, "stopped": False}


# ---------------------------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------------------------

def _sampling(cfg: PhaseConfig, sources: list[Source]) -> tuple[str, float, dict | None]:
    """(sampling, temperature, {source: weight} or None) of the phase's mixture."""
    mixture = cfg.mixture or TaskMixture(tuple(s.name for s in sources))
    weights = dict(zip((s.name for s in sources), mixture.weights)) if mixture.weights else None
    return mixture.sampling, mixture.temperature, weights


def epoch_plan(cfg: PhaseConfig, sources: list[Source], epoch: int, rank: int, world: int) -> list[tuple[Source, list[int]]]:
    """This worker's steps of one epoch: (source, batch indices), mixed across sources by the
    phase's sampling (one source: its batches in shuffled order)."""
    per_source = {s.name: _epoch_batches(s.features, cfg.training.batch_size, cfg.seed + i, epoch, rank, world)
                  for i, s in enumerate(sources)}
    by_name = {s.name: s for s in sources}
    sampling, temperature, weights = _sampling(cfg, sources)
    steps = mixture_steps({name: len(b) for name, b in per_source.items()}, sampling, temperature, cfg.seed, epoch, weights)
    return [(by_name[name], per_source[name][index]) for name, index in steps]


def _mlm_batch(data: PhaseData, order: list[int], step: int, runtime: PhaseRuntime, tokenizer, cfg: PhaseConfig,
               generator) -> dict | None:
    if not data.mlm_features:
        return None
    opts = cfg.training
    start = ((step * runtime.world + runtime.rank) * opts.batch_size) % len(order)  # a shard per worker
    rows = [data.mlm_features[order[(start + k) % len(order)]] for k in range(opts.batch_size)]
    ids, mask = pad_sequences(rows, max(len(r) for r in rows), tokenizer.pad_token_id)
    inputs, labels = mask_tokens(ids, mask, tokenizer, opts.mlm_probability, generator)
    device = runtime.device
    return {"input_ids": inputs.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def train_epoch(model, state: TrainState, data: PhaseData, cfg: PhaseConfig, runtime: PhaseRuntime, tokenizer,
                epoch: int, mlm_generator) -> dict:
    """One epoch of optimiser steps; returns what it measured (loss, tokens, steps per source)."""
    opts, device = cfg.training, runtime.device
    use_bf16 = getattr(device, "type", device) == "cuda" and torch.cuda.is_bf16_supported()
    autocast = (lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    model.train()
    started, tokens, batch_tokens, steps = time.time(), 0, 0, 0
    loss_sum, mlm_sum = torch.zeros((), device=device), torch.zeros((), device=device)
    plan = epoch_plan(cfg, data.sources, epoch, runtime.rank, runtime.world)
    drawn: dict[str, int] = {}
    mlm_order = list(range(len(data.mlm_features)))
    random.Random(cfg.seed * 7919 + epoch).shuffle(mlm_order)
    for step, (source, indices) in enumerate(plan):
        cpu_batch = collate([source.features[i] for i in indices], tokenizer.pad_token_id)
        tokens += int(cpu_batch["attention_mask"].sum())  # counted on the host: no device sync
        batch_tokens += cpu_batch["attention_mask"].numel()  # real + padding (multiple choice: every choice)
        batch = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
        drawn[source.name] = drawn.get(source.name, 0) + 1
        with autocast():
            if not data.multi:
                loss = model(**batch).loss
            else:
                mlm_batch = _mlm_batch(data, mlm_order, step, runtime, tokenizer, cfg, mlm_generator)
                output = model(source.task.name, mlm_batch=mlm_batch, mlm_weight=data.mlm_weight, **batch)
                loss = output.loss
                if output.mlm_loss is not None:
                    mlm_sum += output.mlm_loss.detach().float()
        if opts.gradient_accumulation_steps > 1:
            loss = loss / opts.gradient_accumulation_steps
        loss.backward()
        loss_sum += loss.detach().float()
        steps += 1
        if (step + 1) % opts.gradient_accumulation_steps == 0 or step + 1 == len(plan):
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], opts.max_grad_norm)
            state.optimizer.step()
            state.scheduler.step()
            state.optimizer.zero_grad(set_to_none=True)
    train_loss = float(loss_sum) * opts.gradient_accumulation_steps / max(1, steps)  # one sync per epoch
    if not torch.isfinite(torch.tensor(train_loss)):
        raise FloatingPointError(f"{cfg.phase} phase on {cfg.task}: the training loss became NaN/inf at epoch {epoch + 1}; "
                                 f"lower the learning rate ({cfg.learning_rate:g})")
    seconds = time.time() - started
    measured = {"epoch": epoch + 1, "train_loss": train_loss, "train_tokens_per_s": tokens * runtime.world / max(seconds, 1e-9),
                "train_real_token_fraction": tokens / max(batch_tokens, 1), "train_seconds": seconds}
    if data.mlm_features:
        measured["mlm_loss"] = float(mlm_sum) / max(1, steps)
    if len(data.sources) > 1:
        measured.update({f"steps/{name.replace('@', '/')}": count for name, count in drawn.items()})  # no '@' in MLflow keys
    return measured


def evaluate_epoch(model, data: PhaseData, cfg: PhaseConfig, tokenizer, device) -> tuple[dict, float]:
    """(dev metrics by "dev/<task/>lang/metric", selection score): every task's English dev; a
    mixture selects on the mean of its tasks' English dev metrics."""
    metrics, selection = {}, []
    for name, dev in data.dev_sets.items():
        task = data.tasks[name]
        scored = dev.score(task, model.head(name) if data.multi else model, tokenizer, cfg, device)
        where = f"{name}/{task.train_language}" if len(data.tasks) > 1 else task.train_language
        metrics.update({f"dev/{where}/{metric}": value for metric, value in scored.items()})
        selection.append(scored[task.metric])
    return metrics, sum(selection) / len(selection)


def save_checkpoint(model, tokenizer, data: PhaseData, cfg: PhaseConfig, state: TrainState, epoch: int, last: bool) -> str:
    """A fresh folder with TRAIN_STATE; the last epoch adds the save_pretrained model (and phase 2
    its encoder alone under ENCODER_DIR)."""
    folder = tempfile.mkdtemp(prefix="xstilts-ckpt-")
    if last:
        saved = model.head(model.names[0]) if data.multi else model
        saved.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if cfg.phase == "intermediate":
            saved.base_model.save_pretrained(os.path.join(folder, ENCODER_DIR))
            tokenizer.save_pretrained(os.path.join(folder, ENCODER_DIR))
    torch.save(state.saved(model, epoch, last, bool(cfg.training.early_stopping_patience)), os.path.join(folder, TRAIN_STATE))
    return folder


# ---------------------------------------------------------------------------------------------
# The phase
# ---------------------------------------------------------------------------------------------

def train_phase(config: dict) -> None:
    """What TorchTrainer runs on each worker: the phase of `config` (a PhaseConfig dict) under Ray Train."""
    run_phase(PhaseConfig.from_dict(config), ray_runtime())


def run_phase(cfg: PhaseConfig, runtime: PhaseRuntime) -> None:
    import transformers
    from transformers import AutoTokenizer

    setup_started = time.time()
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # A model in an object store (the embedded model, a phase-2 encoder of a remote phase cache)
    # is read from this node's copy; hub names and local folders pass through unchanged.
    cfg = dataclasses.replace(cfg, init_path=to_local(cfg.init_path), tokenizer_path=to_local(cfg.tokenizer_path))
    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_path)
    data = load_phase_data(cfg, tokenizer, runtime.rank)
    model, frozen = build_model(cfg, data)
    steps_per_epoch = max(1, len(epoch_plan(cfg, data.sources, 0, runtime.rank, runtime.world))
                          // cfg.training.gradient_accumulation_steps)
    state = TrainState.create(cfg, model, steps_per_epoch)
    state.restore(runtime.restore_state(), model, cfg.epochs)  # a restarted worker: after the last reported epoch
    model = runtime.prepare_model(model, data.multi)
    bare_model = model.module if hasattr(model, "module") else model
    mlm_generator = torch.Generator().manual_seed(cfg.seed)
    setup_seconds = time.time() - setup_started
    if runtime.rank == 0:
        _progress("start", phase=cfg.phase, start_epoch=state.start_epoch, setup_seconds=setup_seconds,
                  feature_cache_hit=data.sources[0].cache_hit, threads=torch.get_num_threads(),
                  sources=[s.name for s in data.sources], frozen_parameters=frozen)
    drawn_with = _source_probabilities(cfg, data, runtime)  # the same every epoch: computed once
    for epoch in range(state.start_epoch, cfg.epochs):
        measured = train_epoch(model, state, data, cfg, runtime, tokenizer, epoch, mlm_generator)
        stop = _end_epoch(bare_model, state, data, cfg, runtime, tokenizer, epoch,
                          {**measured, "setup_seconds": setup_seconds, **drawn_with})
        if runtime.rank == 0:
            _progress("epoch", phase=cfg.phase, epoch=epoch + 1)
        if stop:
            break


def _source_probabilities(cfg: PhaseConfig, data: PhaseData, runtime: PhaseRuntime) -> dict:
    """{"p/<task>/<lang>": probability} each source is drawn with, logged with every epoch ({} for one source)."""
    if len(data.sources) < 2:
        return {}
    probabilities = source_probabilities(
        {s.name: len(_epoch_batches(s.features, cfg.training.batch_size, cfg.seed + i, 0, runtime.rank, runtime.world))
         for i, s in enumerate(data.sources)}, *_sampling(cfg, data.sources))
    return {f"p/{name.replace('@', '/')}": p for name, p in probabilities.items()}  # MLflow keys allow no '@'


def _end_epoch(model, state: TrainState, data: PhaseData, cfg: PhaseConfig, runtime: PhaseRuntime, tokenizer,
               epoch: int, measured: dict) -> bool:
    """Rank 0 evaluates, decides on early stopping, logs to MLflow and saves the checkpoint; every
    rank reports. Returns whether the phase stops after this epoch."""
    prefix = INTERMEDIATE_PREFIX if cfg.phase == "intermediate" else ""
    metrics = {f"{prefix}{k}": v for k, v in measured.items()}
    if data.sources[0].cache_hit is not None:
        metrics[f"{prefix}feature_cache_hit"] = float(all(s.cache_hit for s in data.sources))
    if cfg.phase == "target":
        metrics[TARGET_EPOCH] = epoch + 1  # ASHA's time attribute (survives Train restarts)
    checkpoint_dir, stop = None, False
    try:
        if runtime.rank == 0:
            dev, selection = evaluate_epoch(model, data, cfg, tokenizer, runtime.device)
            metrics.update({f"{prefix}{k}": v for k, v in dev.items()})
            metrics[f"{prefix}{EPOCH_EN_DEV}"] = selection
            stop = early_stopping_update(state.stopping, selection, epoch, cfg.training, model)
            last = epoch + 1 == cfg.epochs or stop
            if last and state.stopping["best_model"] is not None and state.stopping["best_epoch"] != epoch:
                # Go on from the best epoch's weights (what early stopping selects).
                model.load_state_dict(state.stopping["best_model"])
                metrics[f"{prefix}best_epoch"] = state.stopping["best_epoch"] + 1
            if last and cfg.phase == "target":
                stats: dict = {}
                metrics.update(zero_shot(data.task, model, tokenizer, cfg, data.eval_options[data.task.name],
                                         data.train_examples, runtime.device, data.dev_sets.get(data.task.name), stats))
                _log_example_stats(cfg, data.task.metric, stats)
            _log_to_mlflow(cfg, {k: v for k, v in metrics.items() if not k.startswith(FINAL_PREFIX)}, epoch + 1,
                           once_key=f"{prefix}epoch")
            checkpoint_dir = save_checkpoint(model, tokenizer, data, cfg, state, epoch, last)
        stop = runtime.broadcast(stop)
        runtime.report(metrics, checkpoint_dir)
    finally:
        if checkpoint_dir:  # report() has copied it to the run's storage (synchronous upload)
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return stop


def early_stopping_update(state: dict, score: float, epoch: int, opts, model) -> bool:
    """Track the best English dev epoch; True when `early_stopping_patience` epochs in a row
    did not improve on it (then the caller restores the best weights)."""
    if not opts.early_stopping_patience:
        return False
    if state["best_score"] is None or score > state["best_score"]:
        state.update(best_score=score, best_epoch=epoch, bad_epochs=0,
                     best_model={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        return False
    state["bad_epochs"] += 1
    return state["bad_epochs"] >= opts.early_stopping_patience


def _broadcast_flag(flag: bool, world: int, device) -> bool:
    """Rank 0's decision, on every worker (under DDP all must stop at the same epoch)."""
    if world == 1:
        return flag
    import torch.distributed as dist

    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


