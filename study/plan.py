"""`xstilts plan`: what a study would run and roughly what it would cost, without running it.

It does everything `xstilts validate` does (the config, names, the probes of the Ray address,
the tracking URI and the storage path), then works out, without starting Ray or writing
anything:

- the trials: `num_samples` per target task, and what each target trains (phase 3, or none for
  a retrieval target);
- the distinct phase-2 trainings the search space allows (intermediate choice x intermediate
  learning rate when it is a `choice`, at the study's seed), each with the cache key a trial
  would compute (`xstilts.trainables.trial.intermediate_cache_fields`) and whether the phase cache
  already holds it (read only, never repaired);
- the resources a trial asks for, and the peak at `max_concurrent_trials`;
- a compute estimate: training tokens (an upper bound: every example at the maximum length)
  over a measured rate: the median `train_tokens_per_s` of earlier trials of the same model in
  the tracking store, else a short timed forward+backward pass of the model on this machine.
"""
from __future__ import annotations

import json
import os
import statistics
import time

from xstilts.tasks.kinds import kind_of

DESCRIPTION = ("Validate a study config and probe what it points at (as `xstilts validate`), then print what the "
               "study would run: trials per target task, the distinct phase-2 trainings and which of them the phase "
               "cache already holds, the resources of a trial, and an estimate of the compute (training tokens over "
               "a measured tokens/s). Starts no Ray and writes nothing.")

MEASURE_STEPS = 3  # timed forward+backward steps when no earlier run of the model is recorded


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def main(args) -> int:
    from xstilts.study.cli import _bad_input, _prepare_run
    from xstilts.study.config import ConfigError

    try:
        study = _prepare_run(args)
        plan = make_plan(study, address=args.address)
    except ConfigError as error:
        return _bad_input("plan", str(error))
    print(json.dumps(plan, indent=1) if args.json else render(plan))
    return 0


# --- the plan ---------------------------------------------------------------------------------

def _model_path(study) -> tuple[str, bool]:
    """Where the trials' model is, and whether it exists yet (the embedded model is built by the
    first study of a storage path; plan never builds it)."""
    from xstilts.trainables.embedded_model import EmbeddedModelSpec
    from xstilts.storage import Location, child, is_uri, published

    c = study.config
    if not c.uses_embedded_model:
        return c.model, True
    path = child(study.storage_path, "embedded_models", f"tiny-xlmr-{EmbeddedModelSpec().key()}")
    exists = published(path) if is_uri(path) else Location(path).child("config.json").exists()
    return path, exists


def _lr_values(spec) -> list[float] | None:
    return [float(v) for v in spec.values] if spec.type == "choice" else None


def _train_examples(sources, study, cap_for) -> int | None:
    """Training examples of phase-2 sources ("task@lang"), capped as the trial would; None when a
    split cannot be read here (no local data: the hub dataset would be downloaded by the trial)."""
    from xstilts.tasks import DataOptions, get_task
    from xstilts.tasks.mixture import parse_source

    c = study.config
    total = 0
    for source in sources:
        name, language = parse_source(source)
        task = get_task(name)
        options = DataOptions(c.data_dir, cap_for(name), c.seed, c.data_files)
        try:
            if not task.has_data("train", language or task.train_language, options):
                return None
            total += len(task.load("train", language or task.train_language, options))
        except Exception:  # noqa: BLE001 - a plan reports what it cannot count, it does not fail
            return None
    return total


def _max_length(task_name: str, study) -> int:
    from xstilts.tasks import get_task

    return study.config.training.max_length or get_task(task_name).max_length


def _cap(training, task: str, phase: str) -> int | None:
    by_task = (training.max_train_examples_by_task or {}).get(task)
    if by_task is not None:
        return by_task
    if phase == "intermediate" and training.intermediate_max_train_examples is not None:
        return training.intermediate_max_train_examples
    return training.max_train_examples


def phase2_trainings(study, model_path: str, model_exists: bool) -> list[dict]:
    """The distinct phase-2 trainings the search space allows, with their cache keys and state."""
    from xstilts.study.runner import trial_base_config
    from xstilts.tasks import NONE
    from xstilts.trainables.config import SEED_INDEX_KEY, TrialConfig
    from xstilts.trainables.phase_cache import PhaseCache, cache_key
    from xstilts.trainables.trial import intermediate_cache_fields, phase2_sources

    c = study.config
    lrs = _lr_values(c.search_space["intermediate_lr"])
    cache = PhaseCache(study.phase_cache_dir)
    rows = []
    for name in c.intermediate_tasks:
        if name == NONE:
            continue
        # With `seeds: N` each seed trains its own phase 2 (the seed is part of the cache key).
        for lr, seed_index in ((lr, s) for lr in (lrs if lrs is not None else [None]) for s in range(c.seeds)):
            base = trial_base_config(study, c.target_tasks[0], model_path, "plan", "plan")
            trial = TrialConfig.from_tune_config({**base, "intermediate_task": name, "intermediate_lr": lr or 0.0,
                                                  "target_lr": 0.0, SEED_INDEX_KEY: seed_index})
            row = {"intermediate_task": name, "intermediate_lr": lr, "seed": trial.seed, "key": None, "cached": False,
                   "sources": list(phase2_sources(trial)), "epochs": c.training.intermediate_epochs}
            if model_exists and lr is not None:
                key = cache_key(intermediate_cache_fields(trial))
                row["key"] = key
                row["cached"] = cache.lookup(key, repair=False) is not None
            task = row["sources"][0].split("@")[0]
            examples = _train_examples(row["sources"], study, lambda t: _cap(c.training, t, "intermediate"))
            row["examples"] = examples
            row["max_tokens"] = None if examples is None else examples * _max_length(task, study) * row["epochs"]
            rows.append(row)
    return rows


def _recorded_rate(study, model_path: str) -> tuple[float | None, float | None, int]:
    """Median real-token training rates of earlier trials of this model (phase 3, phase 2) in the
    study's tracking store, and how many trials they come from. Read only."""
    from xstilts.mlflow_store import sqlite_path

    uri = study.tracking_uri
    if uri.startswith("sqlite:") and not os.path.exists(sqlite_path(uri)):
        return None, None, 0  # opening a missing store would create it
    if "'" in model_path:
        return None, None, 0
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(study.config.mlflow.experiment)
        if experiment is None:
            return None, None, 0
        runs = client.search_runs([experiment.experiment_id], filter_string=f"params.model = '{model_path}'",
                                  max_results=500)
    except Exception:  # noqa: BLE001 - an estimate without history is still a plan
        return None, None, 0
    target = [r.data.metrics["train_tokens_per_s"] for r in runs if "train_tokens_per_s" in r.data.metrics]
    inter = [r.data.metrics["intermediate/train_tokens_per_s"] for r in runs
             if "intermediate/train_tokens_per_s" in r.data.metrics]
    return (statistics.median(target) if target else None, statistics.median(inter) if inter else None,
            len({r.info.run_id for r in runs if "train_tokens_per_s" in r.data.metrics
                 or "intermediate/train_tokens_per_s" in r.data.metrics}))


def _measured_rate(model_path: str, batch_size: int, max_length: int) -> float | None:
    """Tokens/s of a few timed forward+backward steps of the model on this machine's CPU (or GPU)."""
    from xstilts.storage import is_uri

    if is_uri(model_path) or not os.path.isdir(model_path):
        return None  # a hub model is not downloaded by a plan
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    transformers.logging.set_verbosity_error()  # the new head's "newly initialized" report is expected
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=3)
    vocab = model.config.vocab_size
    length = min(max_length, getattr(model.config, "max_position_embeddings", max_length) - 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch_size, length), generator=generator)
    labels = torch.zeros(batch_size, dtype=torch.long)
    model.train()
    times = []
    for _ in range(MEASURE_STEPS + 1):  # the first step warms up (allocations, kernels)
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return batch_size * length / statistics.median(times[1:])


def make_plan(study, address: str | None = None) -> dict:
    from xstilts.study.search import trials_per_target
    from xstilts.tasks import get_task

    c = study.config
    model_path, model_exists = _model_path(study)
    targets = []
    for name in c.target_tasks:
        task = get_task(name)
        retrieval = not kind_of(task).trainable
        examples = None if retrieval else _train_examples([name], study, lambda t: _cap(c.training, t, "target"))
        epochs = 0 if retrieval else c.training.target_epochs
        trials = trials_per_target(c, c.target_tasks.index(name))  # the grid's size or num_samples, x seeds
        targets.append({"target_task": name, "kind": task.kind, "trials": trials, "target_epochs": epochs,
                        "train_examples": examples,
                        "max_tokens": None if examples is None else examples * _max_length(name, study) * epochs * trials})
    trainings = phase2_trainings(study, model_path, model_exists)
    r = c.resources
    per_trial = {"train_workers": r.num_workers, "cpus_per_worker": r.cpus_per_worker, "gpus_per_worker": int(r.use_gpu),
                 "cpus": r.num_workers * r.cpus_per_worker, "gpus": r.num_workers * int(r.use_gpu)}
    peak = min(c.max_concurrent_trials, max(t["trials"] for t in targets))
    # Rates: earlier trials of this model, else a short measurement here.
    target_rate, inter_rate, runs = _recorded_rate(study, model_path)
    source = f"median of {runs} earlier trial(s) of this model in {study.config.mlflow.experiment!r}" if runs else None
    if target_rate is None and model_exists:
        length = c.training.max_length or min(get_task(t).max_length for t in c.target_tasks)
        measured = _measured_rate(model_path, c.training.batch_size, length)
        if measured is not None:
            target_rate = inter_rate = measured
            device = "GPU" if r.use_gpu else "CPU"
            source = (f"measured now: {MEASURE_STEPS} forward+backward steps of batch {c.training.batch_size} x "
                      f"{length} tokens on this machine ({device}, {os.cpu_count()} cores)")
    inter_rate = inter_rate or target_rate
    phase2_tokens = [t["max_tokens"] for t in trainings if not t["cached"]]
    phase3_tokens = [t["max_tokens"] for t in targets if t["target_epochs"]]
    cost = {"rate_source": source, "target_tokens_per_s": target_rate, "intermediate_tokens_per_s": inter_rate,
            "phase2_max_tokens": None if None in phase2_tokens else sum(phase2_tokens),
            "phase3_max_tokens": None if None in phase3_tokens else sum(phase3_tokens)}
    hours = None
    if target_rate and cost["phase2_max_tokens"] is not None and cost["phase3_max_tokens"] is not None:
        hours = (cost["phase2_max_tokens"] / inter_rate + cost["phase3_max_tokens"] / target_rate) / 3600
    cost["worker_hours_upper_bound"] = hours
    return {
        "study": study.name, "where": address or f"a local Ray ({os.cpu_count()} CPUs)",
        "model": c.model, "model_path": model_path, "model_exists": model_exists,
        "tracking_uri": _redacted(study.tracking_uri), "storage_path": study.storage_path,
        "search": {"sampler": c.search.sampler, "scheduler": c.search.scheduler, "seed": c.search.seed,
                   "max_concurrent_trials": c.max_concurrent_trials},
        "trials": sum(t["trials"] for t in targets), "targets": targets,
        "phase2_trainings": trainings, "phase2_cached": sum(1 for t in trainings if t["cached"]),
        "resources_per_trial": per_trial,
        "peak_resources": {"trials": peak, "cpus": peak * per_trial["cpus"], "gpus": peak * per_trial["gpus"]},
        "cost": cost,
    }


def _redacted(uri: str) -> str:
    from xstilts.study.study_run import redact_uri

    return redact_uri(uri)


# --- rendering --------------------------------------------------------------------------------

def _tokens(value) -> str:
    return "unknown (no local data to count)" if value is None else f"{value:.3g}"


def render(plan: dict) -> str:
    lines = [f"plan: study {plan['study']} on {plan['where']}; MLflow {plan['tracking_uri']}; storage {plan['storage_path']}",
             f"model: {plan['model']} ({plan['model_path']}" + ("" if plan["model_exists"] else ", not built yet: the study builds it") + ")",
             f"trials: {plan['trials']} ({len(plan['targets'])} target task(s); Optuna {plan['search']['sampler']}, "
             f"{plan['search']['scheduler']}, seed {plan['search']['seed']}, up to {plan['search']['max_concurrent_trials']} at once)"]
    for t in plan["targets"]:
        what = "no phase 3 (retrieval: the phase-2 encoder is scored)" if t["kind"] == "retrieval" else \
            f"phase 3: {t['target_epochs']} epoch(s) on {t['train_examples'] if t['train_examples'] is not None else 'an uncounted number of'} examples"
        lines.append(f"  {t['target_task']} ({t['kind']}): {t['trials']} trials; {what}")
    trainings = plan["phase2_trainings"]
    lines.append(f"phase-2 trainings: {len(trainings)} distinct, {plan['phase2_cached']} already in the phase cache, "
                 f"{len(trainings) - plan['phase2_cached']} to train (each at most once, shared by every target)")
    for t in trainings:
        lr = "a learning rate drawn per trial (continuous: one training per distinct draw)" if t["intermediate_lr"] is None \
            else f"lr {t['intermediate_lr']:g}"
        state = "cached" if t["cached"] else "to train"
        if t["key"] is None:
            state += " (key known once the model exists)" if not plan["model_exists"] else ""
        lines.append(f"  {t['intermediate_task']}, {lr}, seed {t['seed']}: {state}" + (f", key {t['key']}" if t["key"] else "")
                     + f"; {t['epochs']} epoch(s) on {t['examples'] if t['examples'] is not None else 'an uncounted number of'} examples")
    r, peak = plan["resources_per_trial"], plan["peak_resources"]
    lines.append(f"resources per trial: {r['train_workers']} Ray Train worker(s) x {r['cpus_per_worker']:g} CPU"
                 + (" + 1 GPU" if r["gpus_per_worker"] else "") + " (plus the trial's own process, on a TRAIN_DRIVER slot "
                 f"or 0.01 CPU); at peak {peak['trials']} trial(s): {peak['cpus']:g} CPU, {peak['gpus']} GPU")
    cost = plan["cost"]
    lines.append(f"compute (upper bound: every example at the maximum length, no early stop): phase 2 "
                 f"{_tokens(cost['phase2_max_tokens'])} tokens to train, phase 3 {_tokens(cost['phase3_max_tokens'])} tokens")
    if cost["rate_source"] is None:
        lines.append("  rate: unknown (no earlier trial of this model in the tracking store, and the model is not "
                     "on this machine to measure); run one trial to calibrate")
    else:
        lines.append(f"  rate: {cost['target_tokens_per_s']:.0f} tokens/s per trial ({cost['rate_source']})")
        if cost["worker_hours_upper_bound"] is not None:
            lines.append(f"  ~ {cost['worker_hours_upper_bound']:.2g} trial-hours at that rate (an upper bound; ASHA "
                         f"stops some trials early, and real examples are shorter than the maximum)")
    return "\n".join(lines)
