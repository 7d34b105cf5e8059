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

Test hook: with the environment variable XSTILTS_PROGRESS_FILE set, rank 0 appends one JSON line
per attempt start and per reported epoch (pid, epoch) to that file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import random
import shutil
import tempfile
import time

import torch

from xstilts.tasks import DataOptions, get_task
from xstilts.tasks.base import TaskDataError
from xstilts.tasks.modeling import (batches_by_length, collate, evaluate, freeze_embeddings, load_model_for_task,
                            majority_baseline, pad_sequences, predict, score)
from xstilts.tasks.mixture import parse_source, source_name
from xstilts.tasks.record_schema import (EPOCH_EN_DEV, FINAL_PREFIX, INTERMEDIATE_PREFIX, TARGET_EPOCH, final_chance, final_dev,
                                 summarize_final)
from xstilts.storage import to_local
from xstilts.trainables.config import PhaseConfig
from xstilts.trainables.feature_cache import cached_encode
from xstilts.trainables.multitask import (build_multitask_model, encode_mlm_corpus, load_mlm_corpus, mask_tokens,
                                  mixture_steps, source_probabilities)

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
    """One dev split: examples (for scoring) and features (encoded once, through the cache).

    `examples`/`split` given: a validation subset held out of the training split (a task with no
    English dev split); `split` then names it in the feature cache key."""

    def __init__(self, task, language: str, options: DataOptions, tokenizer, cfg: PhaseConfig,
                 examples: list | None = None, split: str = "dev"):
        self.language = language
        self.held_out = examples is not None
        self.examples = examples if examples is not None else task.load("dev", language, options)
        self.features = None
        if _scores_from_features(task):
            self.features, _ = cached_encode(cfg.feature_cache_dir, task, split, language, options, tokenizer,
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


class _Source:
    """One training split of a phase: a task in one language, encoded through the feature cache.

    With `holdout > 0` the last `holdout` examples are kept out of training and become the
    task's English validation subset (`self.held_out`): for tasks with no English dev split."""

    def __init__(self, task, language: str, options: DataOptions, tokenizer, cfg: PhaseConfig, holdout: int = 0):
        self.task, self.language = task, language
        self.name = source_name(task.name, language)
        self.held_out: list | None = None
        self._examples: list | None = None
        self._options = options
        split = "train"
        if holdout:
            everything = self.examples()
            holdout = min(holdout, len(everything) - 1)
            self._examples, self.held_out = everything[:-holdout], everything[-holdout:]
            split = f"train[:-{holdout}]"  # a different cache entry than the whole split
        self.features, self.cache_hit = cached_encode(cfg.feature_cache_dir, task, split, language, options,
                                                      tokenizer, cfg.tokenizer_path, cfg.training.max_length,
                                                      self.examples)

    def examples(self) -> list:  # loaded only on a feature-cache miss, a holdout, or the majority baseline
        if self._examples is None:
            self._examples = self.task.load("train", self.language, self._options)
        return self._examples


def _holdout_size(task, language: str, options: DataOptions, eval_options: DataOptions, cfg: PhaseConfig) -> int:
    """How many training examples of (task, language) hold out as the task's English validation
    subset: none when the task has an English dev split of its own. A dev split that is the very
    file the task trains on (a sample that only has a dev set, mapped as training data) does not
    count: scores on it would be scores on training examples."""
    if task.has_data("dev", task.train_language, eval_options) and not _dev_is_train(task, options, eval_options):
        return 0
    total = len(task.load("train", language, options))
    size = max(1, int(total * cfg.training.holdout_fraction))
    return min(size, cfg.training.eval_cap(task.name) or size, max(0, total - 1))


def _dev_is_train(task, options: DataOptions, eval_options: DataOptions) -> bool:
    if task.locate is None or (options.data_dir is None and not options.files):
        return False  # generated, or the hub's own splits
    try:
        train = task.locate("train", task.train_language, options)
        dev = task.locate("dev", task.train_language, eval_options)
    except TaskDataError:
        return False
    return bool(set(map(os.path.realpath, train)) & set(map(os.path.realpath, dev)))


def train_phase(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import transformers
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    setup_started = time.time()
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = PhaseConfig.from_dict(config)
    # A model in an object store (the embedded model, a phase-2 encoder of a remote phase cache)
    # is read from this node's copy; hub names and local folders pass through unchanged.
    cfg = dataclasses.replace(cfg, init_path=to_local(cfg.init_path), tokenizer_path=to_local(cfg.tokenizer_path))
    opts = cfg.training
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)

    max_train = opts.max_train_examples
    if cfg.phase == "intermediate" and opts.intermediate_max_train_examples is not None:
        max_train = opts.intermediate_max_train_examples
    by_task = opts.max_train_examples_by_task or {}

    def train_options_of(name: str):
        return cfg.data_options(by_task.get(name, max_train))

    def eval_options_of(name: str):
        return cfg.data_options(opts.eval_cap(name))
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_path)

    # What this phase trains on: "task@lang" sources; one head per distinct task.
    tasks: dict[str, object] = {}
    source_specs: list[tuple[str, str]] = []
    for spec in cfg.sources or (cfg.task,):
        name, language = parse_source(spec)
        if name not in tasks:
            task = get_task(name)
            tasks[name] = task.resolved(train_options_of(name)) if hasattr(task, "resolved") else task  # CCG: labels from data
        source_specs.append((name, language or tasks[name].train_language))
    # The task whose English dev reports `en_dev_score` (phase 3: the target; a mixture: its first task).
    task = tasks.get(parse_source(cfg.task)[0]) or next(iter(tasks.values()))
    # A task without an English dev split validates on a subset held out of one of its sources:
    # the English one when the phase trains on it, else its first.
    holdout_language = {}
    for name, language in source_specs:
        if name not in holdout_language or language == tasks[name].train_language:
            holdout_language[name] = language
    holdouts = {name: _holdout_size(t, holdout_language[name], train_options_of(name), eval_options_of(name), cfg)
                for name, t in tasks.items()}
    sources: list[_Source] = []
    for name, language in source_specs:
        holdout = holdouts[name] if language == holdout_language[name] else 0
        sources.append(_Source(tasks[name], language, train_options_of(name), tokenizer, cfg, holdout))
    english = {s.task.name: s for s in sources if s.language == s.task.train_language}
    validation_source = {s.task.name: s for s in sources if s.held_out is not None}

    def train_examples() -> list:  # the target's English training examples (majority baseline)
        source = english.get(task.name) or next(s for s in sources if s.task is task)
        return source.examples()

    mlm_features: list[list[int]] = []
    multi = len(tasks) > 1 or (cfg.phase == "intermediate" and opts.mlm_weight > 0)
    if multi:
        model = build_multitask_model(list(tasks.values()), cfg.init_path, with_mlm=opts.mlm_weight > 0)
        if opts.mlm_weight > 0:
            lines = load_mlm_corpus(opts.mlm_corpus or "synthetic", max_train, cfg.seed)
            mlm_features = encode_mlm_corpus(lines, tokenizer, opts.max_length or task.max_length)
    else:
        model = load_model_for_task(task, cfg.init_path)
    frozen = freeze_embeddings(model.encoder if multi else model) if opts.freeze_embeddings else 0

    dev_sets: dict[str, _DevSet] = {}
    if rank == 0:
        for name, t in tasks.items():
            if name in validation_source:
                held = validation_source[name]
                dev_sets[name] = _DevSet(t, held.language, eval_options_of(name), tokenizer, cfg,
                                         examples=held.held_out, split=f"train[-{len(held.held_out)}:]")
            else:
                dev_sets[name] = _DevSet(t, t.train_language, eval_options_of(name), tokenizer, cfg)
    dev_en = dev_sets.get(task.name)

    def epoch_plan(epoch: int) -> list[tuple[_Source | None, list[int]]]:
        per_source = {s.name: _epoch_batches(s.features, opts.batch_size, cfg.seed + i, epoch, rank, world)
                      for i, s in enumerate(sources)}
        by_name = {s.name: s for s in sources}
        steps = mixture_steps({name: len(b) for name, b in per_source.items()}, cfg.sampling, cfg.temperature,
                              cfg.seed, epoch, source_weights)
        return [(by_name[name], per_source[name][index]) for name, index in steps]

    source_weights = dict(zip((s.name for s in sources), cfg.weights)) if cfg.weights else None
    if len(sources) > 1:  # what each source is drawn with, logged with every epoch
        probabilities = source_probabilities(
            {s.name: len(_epoch_batches(s.features, opts.batch_size, cfg.seed + i, 0, rank, world))
             for i, s in enumerate(sources)}, cfg.sampling, cfg.temperature, source_weights)

    steps_per_epoch = max(1, len(epoch_plan(0)) // opts.gradient_accumulation_steps)
    total_steps = steps_per_epoch * cfg.epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if not n.endswith(no_decay)], "weight_decay": opts.weight_decay},
        {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(opts.warmup_ratio * total_steps), total_steps)

    start_epoch = 0
    stopping = {"best_score": None, "best_epoch": None, "bad_epochs": 0, "best_model": None}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a restarted worker: continue after the last reported epoch
        with checkpoint.as_directory() as directory:
            # weights_only: tensors, dicts, lists, tuples and numbers only (what the state holds), so a
            # crafted checkpoint file cannot run code when it is loaded.
            state = torch.load(os.path.join(directory, TRAIN_STATE), map_location="cpu", weights_only=True)
            start_epoch = state["epoch"] + 1
            if state.get("stopped"):  # the last (or early-stopped) epoch was reported: nothing is left
                start_epoch = cfg.epochs
            else:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                _set_rng_state(state.get("rng"))
                stopping.update(state.get("early_stopping") or {})

    if multi:  # a step uses one head: the other heads' parameters get no gradient on that step
        model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    else:
        model = ray.train.torch.prepare_model(model)
    bare_model = model.module if hasattr(model, "module") else model
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    prefix = INTERMEDIATE_PREFIX if cfg.phase == "intermediate" else ""
    mlm_generator = torch.Generator().manual_seed(cfg.seed)
    setup_seconds = time.time() - setup_started
    if rank == 0:
        _progress("start", phase=cfg.phase, start_epoch=start_epoch, setup_seconds=setup_seconds,
                  feature_cache_hit=sources[0].cache_hit, threads=torch.get_num_threads(),
                  sources=[s.name for s in sources], frozen_parameters=frozen)

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        started, tokens, batch_tokens, steps = time.time(), 0, 0, 0
        loss_sum = torch.zeros((), device=device)
        mlm_sum = torch.zeros((), device=device)
        plan = epoch_plan(epoch)
        drawn: dict[str, int] = {}
        mlm_order = list(range(len(mlm_features)))
        random.Random(cfg.seed * 7919 + epoch).shuffle(mlm_order)
        for step, (source, indices) in enumerate(plan):
            cpu_batch = collate([source.features[i] for i in indices], tokenizer.pad_token_id)
            tokens += int(cpu_batch["attention_mask"].sum())  # counted on the host: no device sync
            batch_tokens += cpu_batch["attention_mask"].numel()  # real + padding (multiple choice: every choice)
            batch = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
            drawn[source.name] = drawn.get(source.name, 0) + 1
            with autocast():
                if not multi:
                    loss = model(**batch).loss
                else:
                    mlm_batch = None
                    if mlm_features:
                        start = ((step * world + rank) * opts.batch_size) % len(mlm_order)  # a shard per worker
                        rows = [mlm_features[mlm_order[(start + k) % len(mlm_order)]] for k in range(opts.batch_size)]
                        ids, mask = pad_sequences(rows, max(len(r) for r in rows), tokenizer.pad_token_id)
                        inputs, labels = mask_tokens(ids, mask, tokenizer, opts.mlm_probability, mlm_generator)
                        mlm_batch = {"input_ids": inputs.to(device), "attention_mask": mask.to(device),
                                     "labels": labels.to(device)}
                    output = model(source.task.name, mlm_batch=mlm_batch, mlm_weight=opts.mlm_weight, **batch)
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
            f"{prefix}train_real_token_fraction": tokens / max(batch_tokens, 1),
            f"{prefix}train_seconds": seconds,
            f"{prefix}setup_seconds": setup_seconds,
        }
        if mlm_features:
            metrics[f"{prefix}mlm_loss"] = float(mlm_sum) / max(1, steps)
        if len(sources) > 1:
            for name, count in drawn.items():
                metrics[f"{prefix}steps/{name.replace('@', '/')}"] = count  # MLflow keys allow no '@'
            for name, p in probabilities.items():
                metrics[f"{prefix}p/{name.replace('@', '/')}"] = p
        if sources[0].cache_hit is not None:
            metrics[f"{prefix}feature_cache_hit"] = float(all(s.cache_hit for s in sources))
        if cfg.phase == "target":
            metrics[TARGET_EPOCH] = epoch + 1  # ASHA's time attribute (survives Train restarts)
        checkpoint_dir = None
        try:
            if rank == 0:
                selection = []
                for name, dev in dev_sets.items():
                    t = tasks[name]
                    scored = dev.score(t, bare_model.head(name) if multi else bare_model, tokenizer, cfg, device)
                    where = f"{name}/{t.train_language}" if len(tasks) > 1 else t.train_language
                    for metric_name, value in scored.items():
                        metrics[f"{prefix}dev/{where}/{metric_name}"] = value
                    selection.append(scored[t.metric])
                # A mixture selects on the mean of its tasks' English dev metrics.
                metrics[f"{prefix}{EPOCH_EN_DEV}"] = sum(selection) / len(selection)
                stop = _early_stopping_update(stopping, metrics[f"{prefix}{EPOCH_EN_DEV}"], epoch, opts, bare_model)
                last = epoch + 1 == cfg.epochs or stop
                if last and stopping["best_model"] is not None and stopping["best_epoch"] != epoch:
                    # Go on from the best epoch's weights (what early stopping selects).
                    bare_model.load_state_dict(stopping["best_model"])
                    metrics[f"{prefix}best_epoch"] = stopping["best_epoch"] + 1
                if last and cfg.phase == "target":
                    metrics.update(_zero_shot(task, bare_model, tokenizer, cfg, eval_options_of(task.name), train_examples, device, dev_en))
                _log_to_mlflow(cfg, {k: v for k, v in metrics.items() if not k.startswith(FINAL_PREFIX)}, epoch + 1,
                               once_key=f"{prefix}epoch")
                checkpoint_dir = tempfile.mkdtemp(prefix="xstilts-ckpt-")
                if last:
                    saved = bare_model.head(bare_model.names[0]) if multi else bare_model
                    saved.save_pretrained(checkpoint_dir)
                    tokenizer.save_pretrained(checkpoint_dir)
                    if cfg.phase == "intermediate":
                        saved.base_model.save_pretrained(os.path.join(checkpoint_dir, ENCODER_DIR))
                        tokenizer.save_pretrained(os.path.join(checkpoint_dir, ENCODER_DIR))
                if last:  # nothing is left to train: the model is in the save_pretrained files
                    state = {"epoch": epoch, "stopped": True}
                else:
                    early = dict(stopping) if opts.early_stopping_patience else None
                    state = {"model": bare_model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": _rng_state(),
                             "early_stopping": early, "stopped": False}
                torch.save(state, os.path.join(checkpoint_dir, TRAIN_STATE))
            else:
                stop = False
            stop = _broadcast_flag(stop, world, device)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)
        finally:
            if checkpoint_dir:  # report() has copied it to the run's storage (synchronous upload)
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
        if rank == 0:
            _progress("epoch", phase=cfg.phase, epoch=epoch + 1)
        if stop:
            break


def _early_stopping_update(state: dict, score: float, epoch: int, opts, model) -> bool:
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
            results[final_dev(language, name)] = value
        results[final_chance(language, task.metric)] = _majority_baseline(task, train, dev.examples, language)[task.metric]
    results.update(summarize_final({l: results[final_dev(l, task.metric)] for l in languages}, task.train_language))
    return results
