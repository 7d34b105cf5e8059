"""Training throughput of the phase-3 loop inside Ray Train vs a plain PyTorch loop, side by side.

    python benchmarks/throughput.py [--repeats 3] [--epochs 4] [--examples 640] [--layers 4]
                                    [--hidden 256] [--batch-size 32]

Both run the same work on the same model and the same batches:
  trainable  `xstilts.trainables.train_loop.train_phase` in a `TorchTrainer` (1 worker, 1 CPU) in a local
             Ray, phase "target" on synthetic_xnli: model load, encode, then per epoch train +
             English dev evaluation + checkpoint (what a study's phase 3 does; no MLflow, no
             feature cache, so both sides encode).
  plain      the same in this process without Ray: the same model folder, `encode`, the batches
             of `train_loop._epoch_batches` (same seed, so the same batches in the same order),
             AdamW + linear warm-up + gradient clipping, per-epoch dev evaluation and a
             `torch.save` of the training state.
Model: XLMRobertaConfig with `--layers` layers, hidden `--hidden` (4 heads, FFN 4x hidden),
random init, with the embedded model's tokenizer (a few hundred pieces: sequences of the
synthetic pairs are ~40 tokens). Threads: Ray gives a 1-CPU worker OMP_NUM_THREADS=1, so the
plain loop runs with torch.set_num_threads(1) too (a 2-CPU worker would get 2).

Measured per repeat (the two alternate, plain first on even repeats, so drift hits both):
  steady-state tokens/s  non-pad training tokens / seconds of the training steps, epochs 2..N
                         (epoch 1 carries allocator warm-up on both sides); the train loop
                         reports it per epoch, the plain loop times the same span.
  start-up cost          wall time of TorchTrainer.fit() minus wall time of the plain run: Ray
                         Train's fixed cost (controller, placement group, worker process, imports)
                         plus its per-epoch report/checkpoint upload.
Medians over repeats; the ratio is taken per repeat (adjacent runs), then the median.

Last line: `figure: trainable/plain tokens/s <median ratio>` (target >= 0.95).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # noqa: A001 - keep the figure line last when stderr is merged
TASK = "synthetic_xnli"


def build_model(folder: Path, layers: int, hidden: int) -> str:
    """A random-init XLM-R of the given size with the embedded tokenizer, as an HF folder."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForMaskedLM

    from xstilts.trainables.embedded_model import EmbeddedModelSpec, ensure_embedded_model

    embedded = ensure_embedded_model(folder / "embedded", EmbeddedModelSpec(mlm_steps=0), log=lambda *a: None)
    tokenizer = AutoTokenizer.from_pretrained(embedded)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=4, intermediate_size=4 * hidden, max_position_embeddings=130,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
    out = folder / f"xlmr-{layers}x{hidden}"
    XLMRobertaForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def phase_config(model: str, args) -> dict:
    from xstilts.trainables.config import PhaseConfig, TrainingOptions

    return PhaseConfig(
        phase="target", task=TASK, init_path=model, tokenizer_path=model, learning_rate=1e-4, epochs=args.epochs,
        seed=0, training=TrainingOptions(batch_size=args.batch_size, target_epochs=args.epochs,
                                         max_train_examples=args.examples, max_eval_examples=args.eval_examples),
    ).to_dict()


def plain_run(config: dict) -> dict:
    """The phase without Ray: same model, data, batches, optimizer, evaluation and checkpointing."""
    import torch
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    from xstilts.tasks import DataOptions, get_task
    from xstilts.tasks.modeling import collate, encode, load_model_for_task, predict, score
    from xstilts.trainables.config import PhaseConfig
    from xstilts.trainables.train_loop import _epoch_batches

    started = time.time()
    cfg = PhaseConfig.from_dict(config)
    opts = cfg.training
    torch.manual_seed(cfg.seed)
    task = get_task(cfg.task)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_path)
    model = load_model_for_task(task, cfg.init_path)
    features = encode(task, task.load("train", "en", DataOptions(None, opts.max_train_examples, cfg.seed)), tokenizer)
    dev = task.load("dev", "en", DataOptions(None, opts.max_eval_examples, cfg.seed))
    dev_features = encode(task, dev, tokenizer)
    total = len(_epoch_batches(features, opts.batch_size, cfg.seed, 0, 0, 1)) * cfg.epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": opts.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ], lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(opts.warmup_ratio * total), total)
    epochs = []
    with tempfile.TemporaryDirectory() as checkpoints:
        for epoch in range(cfg.epochs):
            model.train()
            tokens, begin = 0, time.time()
            for indices in _epoch_batches(features, opts.batch_size, cfg.seed, epoch, 0, 1):
                batch = collate([features[i] for i in indices], tokenizer.pad_token_id)
                tokens += int(batch["attention_mask"].sum())
                model(**batch).loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            seconds = time.time() - begin
            score(task, predict(task, model, dev_features, tokenizer.pad_token_id, opts.eval_batch_size), dev)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch}, os.path.join(checkpoints, "state.pt"))
            epochs.append({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds})
    return {"wall": time.time() - started, "epochs": epochs}


def trainable_run(config: dict, storage: Path, progress: Path) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    from xstilts.trainables.train_loop import train_phase

    started = time.time()
    result = TorchTrainer(
        train_phase, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=f"throughput-{time.time_ns()}", storage_path=str(storage),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),
                                       failure_config=ray.train.FailureConfig(max_failures=2)),
    ).fit()
    wall = time.time() - started
    if result.error:
        raise result.error
    frame = result.metrics_dataframe.sort_values("epoch")
    starts = [json.loads(line) for line in progress.read_text().splitlines() if '"start"' in line]
    attempts = sum(1 for s in starts if s["time"] >= started)
    if attempts > 1:  # a worker was restarted (resumed from its checkpoint): the wall time includes it
        print(f"  note: Ray Train restarted the worker {attempts - 1} time(s) in this run")
    return {"wall": wall, "setup": float(frame["setup_seconds"].iloc[0]), "threads": starts[-1].get("threads"),
            "epochs": [{"seconds": float(s), "tokens_per_s": float(t)}
                       for s, t in zip(frame["train_seconds"], frame["train_tokens_per_s"])]}


def steady(epochs: list[dict]) -> float:
    later = epochs[1:] or epochs
    return statistics.median(e["tokens_per_s"] for e in later)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--examples", type=int, default=640, help="training examples (batches of --batch-size)")
    parser.add_argument("--eval-examples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="xstilts-throughput-"))
    progress = work / "progress.jsonl"
    env = {"TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "XSTILTS_PROGRESS_FILE": str(progress)}
    os.environ.update(env)
    import ray
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = build_model(work, args.layers, args.hidden)
    params = sum(p.numel() for p in transformers.AutoModel.from_pretrained(model).parameters())
    config = phase_config(model, args)
    print(f"model: XLMRobertaConfig {args.layers} layers, hidden {args.hidden}, FFN {4 * args.hidden}, random init, "
          f"{params / 1e6:.1f}M parameters, embedded tokenizer; task {TASK}: {args.examples} training examples, "
          f"batch {args.batch_size}, {args.epochs} epochs; {args.repeats} repeats; machine: {os.cpu_count()} CPUs")
    torch.set_num_threads(1)  # what a 1-CPU Ray Train worker gets (OMP_NUM_THREADS=1)
    started = time.time()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    print(f"ray.init: {time.time() - started:.1f}s (not counted below)")
    rows = []
    try:
        for repeat in range(args.repeats):
            order = ("plain", "trainable") if repeat % 2 == 0 else ("trainable", "plain")
            runs = {}
            for kind in order:
                runs[kind] = plain_run(config) if kind == "plain" else trainable_run(config, work / "runs", progress)
            plain, trainable = runs["plain"], runs["trainable"]
            row = {"plain": steady(plain["epochs"]), "trainable": steady(trainable["epochs"]),
                   "startup": trainable["wall"] - plain["wall"], "plain_wall": plain["wall"],
                   "trainable_wall": trainable["wall"], "setup": trainable["setup"], "threads": trainable["threads"]}
            row["ratio"] = row["trainable"] / row["plain"]
            rows.append(row)
            print(f"repeat {repeat + 1} ({' then '.join(order)}): tokens/s plain {row['plain']:.0f}, "
                  f"trainable {row['trainable']:.0f} (worker threads {row['threads']}), ratio {row['ratio']:.3f}; "
                  f"wall plain {row['plain_wall']:.1f}s, trainable {row['trainable_wall']:.1f}s "
                  f"(worker setup {row['setup']:.1f}s) -> start-up cost {row['startup']:.1f}s")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    median = {k: statistics.median(r[k] for r in rows) for k in ("plain", "trainable", "ratio", "startup", "plain_wall",
                                                                  "trainable_wall")}
    print(f"\nmedians over {len(rows)} repeats: steady-state tokens/s plain {median['plain']:.0f}, trainable "
          f"{median['trainable']:.0f}; ratio {median['ratio']:.3f} (target >= 0.95); per-repeat ratios "
          + ", ".join(f"{r['ratio']:.3f}" for r in rows))
    print(f"start-up cost of Ray Train (fit wall - plain wall): {median['startup']:.1f}s "
          f"(fit {median['trainable_wall']:.1f}s vs plain {median['plain_wall']:.1f}s for {args.epochs} epochs)")
    if median["ratio"] < 0.95:
        print(f"below target by {0.95 - median['ratio']:.3f}: see the per-repeat ratios; on a shared 2-core machine "
              "the Ray processes (raylet, GCS, controller polling) compete with the single training thread")
    print(f"figure: trainable/plain tokens/s {median['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
