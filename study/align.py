"""`xstilts align`: alignment robustness of a study's encoders on typologically distant languages.

For every language with parallel sentences (the gold pairs of a retrieval task: Tatoeba, BUCC's
gold pairs, or the synthetic Tatoeba-like pairs of the embedded default), how well its sentences
align with their English parallels, before intermediate training (the phase-1 encoder) and after
each intermediate task (every phase-2 encoder the study's trials trained, read from the phase
cache, local or s3://): English -> language top-1 retrieval accuracy and the cosine gap (mean
cosine of parallel pairs minus that of non-parallel pairs) on the mean-pooled hidden states of
one layer. What the scores are and why: `xstilts.analysis.alignment`.

It prints per distance bucket and language family the change after each intermediate task with a
95 % bootstrap interval over sentences, and logs the scores as an MLflow run nested under the
study's parent run (tag xstilts.run_kind = align; metrics align/<encoder>/<language>/<score>,
every pair's values in the artifact alignment.json), which `xstilts report` adds to the section
"Gains by language family and distance from English". `--no-log` skips the run. Starts no Ray.
"""
from __future__ import annotations

import json
import sys

DESCRIPTION = ("Measure how well each language's sentences align with their English parallels (top-1 English -> "
               "language retrieval accuracy and the cosine gap of parallel vs non-parallel pairs, mean-pooled hidden "
               "states of one layer) under the pretrained encoder and under each phase-2 encoder the study trained "
               "(from its phase cache); print the change per language family and distance from English with "
               "bootstrap intervals, and log it as a run nested under the study's MLflow run (the report shows it). "
               "Starts no Ray.")
SPLIT = "dev"  # retrieval tasks are evaluated on their dev split (TaskSpec has train and dev only)
PARALLEL_METRICS = ("accuracy", "f1")  # Tatoeba-like and BUCC-like retrieval: gold pairs are translations


def add_arguments(parser) -> None:
    parser.add_argument("--task", help="retrieval task whose gold pairs are the parallel sentences: tatoeba, "
                                       "bucc2018, synthetic_tatoeba (default: the study's Tatoeba- or BUCC-like "
                                       "target, else synthetic_tatoeba for a study of synthetic tasks, else tatoeba)")
    parser.add_argument("--languages", help="comma-separated languages (default: every language of the task with "
                                            "data under the study's data_dir, or on the hub)")
    parser.add_argument("--pairs", type=int, default=1000, help="parallel pairs per language, at most (default: 1000)")
    parser.add_argument("--layer", type=int, help="hidden_states index to mean-pool: 0 the embeddings, k layer k, "
                                                  "negative from the end (default: XTREME's retrieval layer, "
                                                  "num_layers // 2 + 2, at most the last)")
    parser.add_argument("--json", action="store_true", help="print the scores and changes as JSON")
    parser.add_argument("--no-log", action="store_true", help="do not log the measurement to MLflow")


def main(args) -> int:
    from xstilts.analysis.records import StudyNotFound, find_study
    from xstilts.fields import FieldError
    from xstilts.study.cli import _bad_input, _check_store_args, _tracking_store_exists
    from xstilts.study.runner import load_for_resume
    from xstilts.tasks.base import TaskDataError

    if args.pairs < 2:
        return _bad_input("align", "--pairs: must be at least 2 (a retrieval needs a wrong candidate); use e.g. 1000")
    bad = _check_store_args("align", args)
    if bad is not None:
        return bad
    if not _tracking_store_exists(args.tracking_uri):
        return _bad_input("align", f"--tracking-uri: no MLflow store at {args.tracking_uri}; run `xstilts run` first or "
                                   "pass the store the study was run with")
    try:
        record = find_study(args.tracking_uri, args.experiment, args.study)
        study, parent_run_id = load_for_resume(args.tracking_uri, args.experiment, record.name)
        plan = plan_alignment(study, args.task, args.languages, args.pairs, args.layer)
        result = measure(study, record, plan, log=lambda line: print(line, file=sys.stderr))
    except StudyNotFound as error:
        return _bad_input("align", f"--study: {error}")
    except (FieldError, TaskDataError) as error:
        return _bad_input("align", str(error))
    print(json.dumps(summary_json(result), indent=1) if args.json else render(result))
    if not args.no_log:
        run_id = log_alignment(study, parent_run_id, result)
        print(f"logged to MLflow: run {run_id}, nested under study {study.name}'s run {parent_run_id}; "
              f"`xstilts report --study {study.name} --out DIR` shows it")
    return 0


# --- what to measure --------------------------------------------------------------------------

def default_task(config) -> str:
    """The study's first Tatoeba- or BUCC-like target; else synthetic_tatoeba when every target is
    a synthetic task; else tatoeba."""
    from xstilts.tasks import get_task
    from xstilts.tasks.synthetic import LANGUAGES as SYNTHETIC_LANGUAGES

    targets = [get_task(name) for name in config.target_tasks]
    for task in targets:
        if task.kind == "retrieval" and task.metric in PARALLEL_METRICS:
            return task.name
    if all(set(task.languages) <= set(SYNTHETIC_LANGUAGES) for task in targets):
        return "synthetic_tatoeba"
    return "tatoeba"


def _data_options(config):
    from xstilts.tasks import DataOptions

    return DataOptions(config.data_dir, None, config.seed, config.data_files)


def plan_alignment(study, task_name: str | None, languages: str | None, pairs: int, layer: int | None) -> dict:
    """The task, languages, pair cap and layer; raises FieldError naming the option to fix."""
    from xstilts.fields import FieldError, short
    from xstilts.tasks import UnknownTaskError, get_task

    c = study.config
    name = task_name or default_task(c)
    try:
        task = get_task(name)
    except UnknownTaskError:
        raise FieldError("--task", f"unknown task {short(name)}", "use tatoeba, bucc2018 or synthetic_tatoeba") from None
    if task.kind != "retrieval" or task.metric not in PARALLEL_METRICS:
        raise FieldError("--task", f"{name} has no parallel sentences (a {task.kind} task scored by {task.metric})",
                         "use a Tatoeba- or BUCC-like retrieval task: tatoeba, bucc2018 or synthetic_tatoeba")
    options = _data_options(c)
    if languages is not None:
        wanted = [l.strip() for l in languages.split(",") if l.strip()]
        unknown = [l for l in wanted if l not in task.languages]
        if not wanted or unknown or "en" in wanted:
            raise FieldError("--languages", f"{short(languages)}: {name} has no parallel corpus for "
                             f"{', '.join(unknown) or 'en' if wanted else 'an empty list'}",
                             f"name some of {', '.join(l for l in task.languages if l != 'en')}")
        missing = [l for l in wanted if not task.has_data(SPLIT, l, options)]
        if missing:
            raise FieldError("--languages", f"{name} has no {SPLIT} data for {', '.join(missing)} "
                             f"(the study's data_dir: {short(c.data_dir)})",
                             "drop them, or put their files under the study's data_dir (docs/tasks.md)")
    else:
        wanted = [l for l in task.languages if l != "en" and task.has_data(SPLIT, l, options)]
        if not wanted:
            raise FieldError("--task", f"{name} has {SPLIT} data for no language (the study's data_dir: {short(c.data_dir)})",
                             "put its files under the study's data_dir (docs/tasks.md) or pick another --task")
    return {"task": name, "languages": wanted, "pairs": pairs, "layer": layer}


def phase2_encoders(study, record, model_path: str) -> list[dict]:
    """Every distinct phase 2 the study's trials ran ((intermediate, its learning rate, seed
    repeat), from their MLflow params), in the config's order, with its phase-cache folder (local;
    an object-store entry is copied and verified) or None when the cache does not hold it."""
    from xstilts.analysis.records import iter_trials
    from xstilts.study.runner import trial_base_config
    from xstilts.tasks import NONE
    from xstilts.tasks.record_schema import PARAM_INTERMEDIATE_LR, PARAM_SEED_INDEX
    from xstilts.trainables.config import SEED_INDEX_KEY, TrialConfig
    from xstilts.trainables.phase_cache import PhaseCache, cache_key
    from xstilts.trainables.trial import intermediate_cache_fields

    c = study.config
    found = set()
    for trial in iter_trials(record):
        name = trial.intermediate_task
        try:
            lr = float(trial.params.get(PARAM_INTERMEDIATE_LR, ""))
        except ValueError:
            continue
        if name and name != NONE and lr > 0:
            found.add((name, lr, int(trial.params.get(PARAM_SEED_INDEX) or 0)))
    order = {name: i for i, name in enumerate(c.intermediate_tasks)}
    cache = PhaseCache(study.phase_cache_dir, on_event=lambda message: None)
    base = trial_base_config(study, c.target_tasks[0], model_path, "align", "align")
    encoders = []
    for name, lr, seed_index in sorted(found, key=lambda e: (order.get(e[0], len(order)), e[0], e[1], e[2])):
        trial = TrialConfig.from_tune_config({**base, "intermediate_task": name, "intermediate_lr": lr,
                                              "target_lr": 0.0, SEED_INDEX_KEY: seed_index})
        key = cache_key(intermediate_cache_fields(trial))
        encoders.append({"intermediate": name, "learning_rate": lr, "seed_index": seed_index, "key": key,
                         "path": cache.fetch(key, repair=False)})
    return encoders


def _label(name: str, lr: float, seed_index: int, several_lrs: bool, several_seeds: bool) -> str:
    details = ([f"lr {lr:g}"] if several_lrs else []) + ([f"seed +{seed_index}"] if several_seeds else [])
    return name + (f" ({', '.join(details)})" if details else "")


# --- the measurement --------------------------------------------------------------------------

def measure(study, record, plan: dict, log=print) -> dict:
    """Score every (encoder, language): a `xstilts.analysis.alignment` record (new_result)."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from xstilts.analysis.alignment import add_encoder, add_scores, new_result, parallel_pairs, score_pairs
    from xstilts.fields import FieldError
    from xstilts.storage import to_local
    from xstilts.study.runner import ensure_model
    from xstilts.tasks import get_task
    from xstilts.tasks.record_schema import ALIGN_BASE, align_encoder
    from xstilts.tasks.retrieval import embed_sentences, load_encoder, resolve_layer

    transformers.logging.set_verbosity_error()  # a bare encoder's unused pooler is expected, not news
    task = get_task(plan["task"])
    model_path = ensure_model(study, log=lambda *a, **k: None)
    base_local = to_local(model_path)
    try:
        layer = resolve_layer(AutoConfig.from_pretrained(base_local).num_hidden_layers, plan["layer"])
    except ValueError as error:
        raise FieldError("--layer", str(error), "pick one of those, or leave --layer out") from None
    options = _data_options(study.config)
    parallel = {}
    for language in plan["languages"]:
        corpus = task.load(SPLIT, language, options)[0]
        english, other = parallel_pairs(corpus, plan["pairs"])
        if len(english) >= 2:
            parallel[language] = (english, other)
        else:
            log(f"{language}: fewer than 2 distinct parallel pairs, left out")
    if not parallel:
        raise FieldError("--languages", f"no language of {plan['task']} has 2 or more distinct parallel pairs",
                         "pick other languages or another --task")

    result = new_result(study.name, plan["task"], SPLIT, layer, plan["pairs"])
    result["skipped_encoders"] = []
    phase2 = phase2_encoders(study, record, model_path)
    lrs = {e["intermediate"]: set() for e in phase2}
    seeds = {e["intermediate"]: set() for e in phase2}
    for e in phase2:
        lrs[e["intermediate"]].add(e["learning_rate"])
        seeds[e["intermediate"]].add(e["seed_index"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    todo = [(ALIGN_BASE, ALIGN_BASE, f"{ALIGN_BASE} (pretrained)", base_local, None, 0)]
    for e in phase2:
        name = align_encoder(e["intermediate"], e["learning_rate"], e["seed_index"])
        label = _label(e["intermediate"], e["learning_rate"], e["seed_index"], len(lrs[e["intermediate"]]) > 1,
                       len(seeds[e["intermediate"]]) > 1)
        if e["path"] is None:
            result["skipped_encoders"].append({"name": name, "label": label, "key": e["key"]})
            log(f"{label}: its phase-2 encoder (cache key {e['key']}) is not in the phase cache: not measured")
            continue
        todo.append((name, e["intermediate"], label, e["path"], e["learning_rate"], e["seed_index"]))
    for name, intermediate, label, path, lr, seed_index in todo:
        model, tokenizer = load_encoder(path).to(device), AutoTokenizer.from_pretrained(path)
        add_encoder(result, name, intermediate, label, path, lr, seed_index)
        for language, (english, other) in parallel.items():
            english_states, other_states = (
                embed_sentences(model, tokenizer, texts, layer, max_length=task.max_length, device=device).numpy()
                for texts in (english, other))
            add_scores(result, name, language, score_pairs(english_states, other_states))
        log(f"{label}: measured on {len(parallel)} language(s)")
    return result


# --- output -----------------------------------------------------------------------------------

def summary_json(result: dict) -> dict:
    """The record without its per-pair values, and the changes with their intervals."""
    from xstilts.analysis.alignment import changes_json

    return {**{k: v for k, v in result.items() if k != "pairs"}, "changes": changes_json(result)}


def render(result: dict) -> str:
    from xstilts.analysis.alignment import alignment_tables

    lines = [f"alignment with English: study {result['study']}, {result['task']} ({result['split']}), layer "
             f"{result['layer']}, {len(result['encoders'])} encoder(s), {len(result['languages'])} language(s)"]
    for skipped in result.get("skipped_encoders", []):
        lines.append(f"not in the phase cache (not measured): {skipped['label']}")
    lines += [table.text() for table in alignment_tables(result)]
    return "\n\n".join(lines)


def log_alignment(study, parent_run_id: str, result: dict) -> str:
    """One MLflow run nested under the study's parent run: a metric per (encoder, language, score)
    and per (encoder, mean over languages), params, and the whole record as its artifact."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from xstilts.analysis.alignment import SCORES, language_means
    from xstilts.mlflow_store import call_with_retry
    from xstilts.tasks.record_schema import (ALIGN_ARTIFACT, ALIGN_KIND, ALIGN_MEAN, PARAM_ALIGN_ENCODERS,
                                             PARAM_ALIGN_LAYER, PARAM_ALIGN_MAX_PAIRS, PARAM_ALIGN_SPLIT,
                                             PARAM_ALIGN_TASK, TAG_KIND, TAG_PARENT, TAG_STUDY, align_metric)

    client = MlflowClient(study.tracking_uri)
    parent = call_with_retry(client.get_run, parent_run_id, what="reading the study's run")
    run = call_with_retry(client.create_run, parent.info.experiment_id, run_name=f"{study.name}-align",
                          tags={TAG_KIND: ALIGN_KIND, TAG_STUDY: study.name, TAG_PARENT: parent_run_id},
                          what="creating the alignment run")
    metrics = []
    for encoder, per_language in result["scores"].items():
        for language, scores in per_language.items():
            metrics += [Metric(align_metric(encoder, language, score), float(scores[score]), 0, 0) for score in SCORES]
        metrics += [Metric(align_metric(encoder, ALIGN_MEAN, score), value, 0, 0)
                    for score, value in language_means(result, encoder).items()]
    params = [Param(PARAM_ALIGN_TASK, result["task"]), Param(PARAM_ALIGN_SPLIT, result["split"]),
              Param(PARAM_ALIGN_LAYER, str(result["layer"])), Param(PARAM_ALIGN_MAX_PAIRS, str(result["max_pairs"])),
              Param(PARAM_ALIGN_ENCODERS, ",".join(e["name"] for e in result["encoders"])[:6000])]
    for start in range(0, max(len(metrics), 1), 900):
        call_with_retry(client.log_batch, run.info.run_id, metrics=metrics[start:start + 900],
                        params=params if start == 0 else [], what="logging the alignment scores")
    call_with_retry(client.log_text, run.info.run_id, json.dumps(result), ALIGN_ARTIFACT,
                    what="logging the alignment record")
    call_with_retry(client.set_terminated, run.info.run_id, what="closing the alignment run")
    return run.info.run_id
