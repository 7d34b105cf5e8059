"""Training and evaluation speed of the real multilingual-e5-small on this CPU: the numbers that
size the mini-XTREME study of issue 8 (examples per second -> how many examples fit in 90 minutes).

    python benchmarks/real_model_speed.py [--model DIR] [--data DIR] [--threads 1,2]
                                          [--max-lengths 128,64] [--batch-size 32] [--steps 3]

Model: the folder built by xstilts build-model me5-small (default $XSTILTS_ME5_PATH or
/work/models/me5-small): BertModel, 12 layers, hidden 384, XLM-R's 250k vocabulary.
Data: XNLI's English training pairs of the shared samples (`xnli/test-en.labeled.tsv`, the
clean zero-shot training split), the first `--examples` in file order, through the project's
loader and `xstilts.tasks.modeling.encode` (no segment ids: the XLM-R tokenizer makes none).

For each thread count x max_length x (word embeddings trainable | frozen with
`xstilts.tasks.modeling.freeze_embeddings`): a fresh classification model, then `--warmup` + `--steps`
training steps exactly as the train loop runs them (length-grouped batches of `--batch-size` in
shuffled order, `collate`, forward + backward, gradient clipping, AdamW over the trainable
parameters with the train loop's weight-decay groups); the timed steps give training
examples/s and non-pad tokens/s. Per thread count x max_length, evaluation examples/s too
(`predict` in batches of `--eval-batch-size`, no gradients). Thread counts are set with
torch.set_num_threads in this one process.

Wall-clock speed is what a study gets, but it depends on what else runs: the load average is
recorded with each measurement, and so is the process CPU time (examples per CPU-second), which
is close to the speed on an otherwise idle core for 1 thread even on a busy machine (for 2
threads it sums both threads' time, so it cannot show the parallel speed-up).

Prints one JSON object per measurement, a table, and as its last line
`figure: train examples per CPU-second (1 thread, max_length 128, frozen embeddings) <value>`.
The default run takes about 5 minutes on 2 shared cores.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("XSTILTS_ME5_PATH", "/work/models/me5-small"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--max-lengths", default="128,64", help="comma-separated max_length values")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, first-call costs)")
    parser.add_argument("--examples", type=int, default=512, help="XNLI pairs to draw the batches from")
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not (Path(args.model) / "config.json").exists():
        sys.exit(f"{args.model}: no model folder; build it with xstilts build-model me5-small "
                 "(see its docstring) or pass --model")
    if not (Path(args.data) / "xnli" / "test-en.labeled.tsv").exists():
        sys.exit(f"{args.data}: no xnli/test-en.labeled.tsv; pass --data pointing at the shared samples")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from xstilts.tasks import DataOptions, get_task
    from xstilts.tasks.modeling import batches_by_length, collate, encode, freeze_embeddings, load_model_for_task, predict

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    task = get_task("xnli")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples = task.load("train", "en", DataOptions(args.data, max_examples=args.examples))
    results = []
    for max_length in (int(x) for x in args.max_lengths.split(",")):
        features = encode(task, examples, tokenizer, max_length)
        batches = batches_by_length(features, args.batch_size)
        random.Random(args.seed).shuffle(batches)  # as the train loop's _epoch_batches
        batches = batches[:args.warmup + args.steps]
        if len(batches) < args.warmup + args.steps:
            sys.exit(f"--examples {args.examples} gives only {len(batches)} batches; raise it")
        eval_features = features[:args.eval_examples]
        for threads in (int(x) for x in args.threads.split(",")):
            torch.set_num_threads(threads)
            for frozen in (False, True):
                results.append(_train_speed(task, args, features, batches, tokenizer, threads, max_length, frozen,
                                            load_model_for_task, freeze_embeddings, collate))
                print(json.dumps(results[-1]), flush=True)
            results.append(_eval_speed(task, args, eval_features, tokenizer, threads, max_length,
                                       load_model_for_task, predict))
            print(json.dumps(results[-1]), flush=True)

    print("\nthreads  max_length  embeddings  train ex/s  train tok/s  s/step  ex/CPU-s  eval ex/s  eval ex/CPU-s  load")
    for r in results:
        if r["kind"] == "train":
            evaluation = next(e for e in results if e["kind"] == "eval" and e["threads"] == r["threads"]
                              and e["max_length"] == r["max_length"])
            print(f"{r['threads']:>7}  {r['max_length']:>10}  {'frozen' if r['frozen'] else 'trained':>10}  "
                  f"{r['examples_per_s']:>10.2f}  {r['tokens_per_s']:>11.0f}  {r['seconds_per_step']:>6.2f}  "
                  f"{r['examples_per_cpu_s']:>8.2f}  {evaluation['examples_per_s']:>9.1f}  "
                  f"{evaluation['examples_per_cpu_s']:>13.1f}  {r['load_average']:>4.1f}")
    # The headline is CPU-time based: it holds on a busy machine, and a study runs its trials
    # with 1 thread each (a 1-CPU Ray worker), so it is the per-core speed a trial gets.
    headline = next((r for r in results if r["kind"] == "train" and r["threads"] == 1 and r["frozen"]), results[0])
    print(f"figure: train examples per CPU-second ({headline['threads']} thread, max_length {headline['max_length']}, "
          f"{'frozen' if headline['frozen'] else 'trained'} embeddings) {headline['examples_per_cpu_s']:.2f}")


def _train_speed(task, args, features, batches, tokenizer, threads, max_length, frozen,
                 load_model_for_task, freeze_embeddings, collate) -> dict:
    import torch

    torch.manual_seed(args.seed)
    model = load_model_for_task(task, args.model)
    frozen_parameters = freeze_embeddings(model) if frozen else 0
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0}], lr=2e-5)
    model.train()
    seconds, cpu_seconds, examples, tokens = 0.0, 0.0, 0, 0
    for step, indices in enumerate(batches):
        started, cpu_started = time.perf_counter(), time.process_time()
        batch = collate([features[i] for i in indices], tokenizer.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            seconds += time.perf_counter() - started
            cpu_seconds += time.process_time() - cpu_started
            examples += len(indices)
            tokens += int(batch["attention_mask"].sum())
    return {"kind": "train", "threads": threads, "max_length": max_length, "frozen": frozen,
            "frozen_parameters": frozen_parameters, "batch_size": args.batch_size, "steps": args.steps,
            "examples_per_s": examples / seconds, "tokens_per_s": tokens / seconds,
            "seconds_per_step": seconds / args.steps, "cpu_seconds_per_step": cpu_seconds / args.steps,
            "examples_per_cpu_s": examples / cpu_seconds, "load_average": os.getloadavg()[0]}


def _eval_speed(task, args, features, tokenizer, threads, max_length, load_model_for_task, predict) -> dict:
    model = load_model_for_task(task, args.model)
    predict(task, model, features[:8], tokenizer.pad_token_id, args.eval_batch_size)  # warm-up
    started, cpu_started = time.perf_counter(), time.process_time()
    predict(task, model, features, tokenizer.pad_token_id, args.eval_batch_size)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {"kind": "eval", "threads": threads, "max_length": max_length, "examples": len(features),
            "examples_per_s": len(features) / seconds, "examples_per_cpu_s": len(features) / cpu_seconds,
            "load_average": os.getloadavg()[0]}


if __name__ == "__main__":
    main()
