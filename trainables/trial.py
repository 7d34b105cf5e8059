"""One trial as a Ray Tune function trainable: phase 2 (through the phase cache) then phase 3,
each a Ray Train `TorchTrainer` run, with the trial's nested MLflow run.

This is the shape Ray 2.60 supports for Tune + Train V2: a function trainable that builds and
runs TorchTrainers inside it; `TuneReportCallback` forwards phase 3's per-epoch reports to Tune
so the scheduler (ASHA) can stop the trial early.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import traceback
from pathlib import Path

from xstilts.tasks import NONE, get_task
from xstilts.tasks.mixture import TaskMixture, parse_source, source_name
from xstilts.trainables.config import PER_TASK_CAPS, PhaseConfig, TrialConfig
from xstilts.trainables.phase_cache import PhaseCache, cache_key, in_use
from xstilts.storage import child, is_uri, to_local, uri_of
from xstilts.tasks.record_schema import (PARAM_SEED_INDEX, METRIC_PHASE_CACHE_HIT, PARAM_INTERMEDIATE_LR, PARAM_INTERMEDIATE_TASK, PARAM_RETRIEVAL_LAYER, PARAM_TARGET_LR, PARAM_TARGET_TASK, PARAM_INTERMEDIATE_LANGUAGES, PARAM_INTERMEDIATE_NUM_LANGUAGES,
                                 PARAM_INTERMEDIATE_SAMPLING, PARAM_INTERMEDIATE_SOURCES,
                                 PARAM_INTERMEDIATE_TEMPERATURE, PARAM_INTERMEDIATE_WEIGHTS, PARAM_TARGET_TRAIN,
                                 PARAM_INTERMEDIATE_MLM_WEIGHT)
from xstilts.tasks.record_schema import (EPOCH_EN_DEV, FINAL_ALL_LANGUAGES, FINAL_CHANCE_PREFIX, FINAL_DEV_PREFIX, FINAL_EN_DEV,
                                 FINAL_PREFIX, INTERMEDIATE_PREFIX,
                                 TAG_CHECKPOINT, TAG_ERROR, TAG_INTERMEDIATE, TAG_STOPPED_EARLY, TAG_SELECTION_METRIC,
                                 TAG_STUDY, TAG_TARGET, TARGET_EPOCH, final_dev, summarize_final)
from xstilts.trainables.ray_compat import tune_stop_event
from xstilts.trainables.trial_run import TrialRun
from xstilts.trainables.train_loop import ENCODER_DIR, train_phase
from xstilts.tasks.kinds import kind_of


def trial_params(trial: TrialConfig) -> dict:
    """What MLflow records as the trial's params: the point in the space plus the fixed recipe."""
    params = {
        PARAM_TARGET_TASK: trial.target_task, PARAM_INTERMEDIATE_TASK: trial.intermediate_task,
        PARAM_INTERMEDIATE_LR: trial.intermediate_lr, PARAM_TARGET_LR: trial.target_lr,
        "model": trial.model_path, "seed": trial.seed, PARAM_SEED_INDEX: trial.seed_index, "data_dir": trial.data_dir,
        "num_workers": trial.resources.num_workers, "use_gpu": trial.resources.use_gpu,
        PARAM_TARGET_TRAIN: trial.target_train,
    }
    params.update(intermediate_params(trial))
    params.update({f"training.{k}": v for k, v in dataclasses.asdict(trial.training).items()})
    return params


def phase2_sources(trial: TrialConfig) -> tuple[str, ...]:
    """The "task@lang" training splits of phase 2 (() for none)."""
    if trial.intermediate_task == NONE:
        return ()
    sources = trial.intermediate_mixture.tasks if trial.intermediate_mixture else (trial.intermediate_task,)
    full = []
    for source in sources:
        name, language = parse_source(source)
        full.append(source_name(name, language or get_task(name).train_language))
    return tuple(full)


def intermediate_params(trial: TrialConfig) -> dict:
    """What phase 2 trained on, as MLflow params the analysis reads (e.g. languages per mixture)."""
    sources = list(phase2_sources(trial))
    languages = sorted({parse_source(s)[1] or get_task(parse_source(s)[0]).train_language for s in sources})
    params = {PARAM_INTERMEDIATE_SOURCES: ",".join(sources), PARAM_INTERMEDIATE_LANGUAGES: ",".join(languages),
              PARAM_INTERMEDIATE_NUM_LANGUAGES: len(languages)}
    mixture = trial.intermediate_mixture
    if mixture is not None and mixture.mlm_weight is not None:
        params[PARAM_INTERMEDIATE_MLM_WEIGHT] = mixture.mlm_weight
    if len(sources) > 1:
        params[PARAM_INTERMEDIATE_SAMPLING] = mixture.sampling
        params[PARAM_INTERMEDIATE_TEMPERATURE] = mixture.temperature
        if mixture.weights:
            params[PARAM_INTERMEDIATE_WEIGHTS] = ",".join(f"{w:g}" for w in mixture.weights)
    return params


def train_languages(trial: TrialConfig, target) -> list[str]:
    """The target's languages with a training split of their own (the training language first)."""
    from xstilts.tasks import DataOptions

    options = DataOptions(trial.data_dir, None, trial.seed, trial.data_files)
    others = [l for l in target.languages if l != target.train_language and target.has_data("train", l, options)]
    return [target.train_language, *others]


def target_sources(trial: TrialConfig, target) -> tuple[str, ...] | None:
    """Phase 3's training splits: None (English, zero-shot) or, for translate-train, every
    language of the target that has a training split."""
    if trial.target_train == "english":
        return None
    return tuple(source_name(target.name, l) for l in train_languages(trial, target))


# Where each language's phase-3 model of a per_language trial is (JSON {language: checkpoint}).
TAG_CHECKPOINTS_BY_LANGUAGE = "xstilts.checkpoints_by_language"


def per_language_target(trial: TrialConfig, target, encoder: str, trial_id: str, run: TrialRun) -> dict[str, float]:
    """`target_train: per_language`: one phase-3 model per language, each trained on that
    language's own training split only (from the same phase-2 encoder, same recipe) and scored
    on that language's dev set: "tune on the target language's own data", one language at a time.

    The training language's model trains first, reports its epochs to Tune and MLflow as a
    zero-shot trial's does (English dev still selects), and is the trial's checkpoint; the other
    languages' runs log nothing per epoch. Final: each language's scores from its own model, the
    means over them, the English model's chance baselines. Costs one phase 3 per language.
    """
    import json

    finals: dict[str, float] = {}
    checkpoints: dict[str, str] = {}
    for language in train_languages(trial, target):
        first = language == target.train_language
        phase = PhaseConfig.for_trial(trial, "target", trial.target_task, encoder, trial.target_lr,
                                      trial.training.target_epochs, TaskMixture((source_name(target.name, language),)),
                                      run.run_id if first else None)
        result = _fit(phase, trial, f"{trial_id}-target-{language}", report_to_tune=first)
        if result.error:
            raise result.error
        own = f"{FINAL_DEV_PREFIX}{language}/"
        finals.update({k: v for k, v in result.metrics.items()
                       if k.startswith(own) or (first and k.startswith(FINAL_CHANCE_PREFIX))})
        checkpoints[language] = uri_of(result.checkpoint.filesystem, result.checkpoint.path)
    scores = {language: finals[final_dev(language, target.metric)] for language in checkpoints
              if final_dev(language, target.metric) in finals}
    finals.update(summarize_final(scores, target.train_language))
    run.set_tags({TAG_CHECKPOINT: checkpoints[target.train_language],
                  TAG_CHECKPOINTS_BY_LANGUAGE: json.dumps(checkpoints)[:4000]})
    return finals


def _fit(phase: PhaseConfig, trial: TrialConfig, name: str, report_to_tune: bool):
    import ray.train
    from ray.train.torch import TorchTrainer

    callbacks = []
    if report_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    resources = trial.resources
    trainer = TorchTrainer(
        train_phase,
        train_loop_config=phase.to_dict(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.num_workers, use_gpu=resources.use_gpu,
            resources_per_worker={"CPU": resources.cpus_per_worker, **({"GPU": 1} if resources.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=child(trial.storage_path, trial.study_name, "train_runs"),
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            # One checkpoint per run: the last epoch's, which is also the best (the last epoch
            # saves the best epoch's weights) and what a restart resumes from.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks,
        ),
    )
    result = trainer.fit()
    if result.error is None and result.checkpoint is not None:
        drop_orphan_checkpoints(uri_of(result.checkpoint.filesystem, result.checkpoint.path))
    return result


def drop_orphan_checkpoints(kept_path: str) -> list[str]:
    """Remove the run's checkpoint folders other than `kept_path`; return their names.

    A worker killed after uploading a checkpoint but before Ray Train's controller registered it
    leaves a folder no checkpoint manager knows of (num_to_keep never deletes it), as does a run
    whose retry started without its snapshot: bounded disk means removing them once the run has
    completed with its own checkpoint.
    """
    from xstilts.storage import Location

    run_path, _, kept = kept_path.rstrip("/").rpartition("/")
    if not run_path or not kept.startswith("checkpoint_"):
        return []
    run_folder = Location(run_path)
    dropped = []
    import re

    for name in run_folder.children():
        # Ray Train names them checkpoint_<timestamp>; its checkpoint_manager_snapshot.json stays.
        if re.fullmatch(r"checkpoint_\d{4}-\d{2}-\d{2}_[\d.-]+", name) and name != kept:
            run_folder.child(name).delete()
            dropped.append(name)
    return dropped


def _data_dir_fingerprint(data_dir: str | None) -> str | None:
    """The content of the data folder phase 2 reads from (None: the tasks' default sources)."""
    if not data_dir:
        return None
    from xstilts.trainables.fingerprint import content_fingerprint

    return content_fingerprint(data_dir) if is_uri(data_dir) or os.path.isdir(data_dir) else f"missing:{data_dir}"


def intermediate_cache_fields(trial: TrialConfig) -> dict:
    """Everything that determines a phase-2 result, and nothing else (not the target task).

    The model and the data are keyed by their content, not their location
    (`xstilts.trainables.fingerprint.content_fingerprint`): a local model folder or data folder by the
    hashes of its files (re-saving different weights into the same folder is a miss; a copy of
    the same files elsewhere is a hit), a URI by its manifest, an HF hub name by the name and the
    revision the local hub cache resolves it to (the name alone when there is none).
    """
    from xstilts.trainables.fingerprint import content_fingerprint, data_files_fingerprint

    fields = {
        "model": content_fingerprint(trial.model_path), "intermediate_task": trial.intermediate_task,
        "learning_rate": trial.intermediate_lr, "seed": trial.seed,
        "data_dir": _data_dir_fingerprint(trial.data_dir),
        "data_files": data_files_fingerprint(trial.data_files, trial.data_dir),
        "epochs": trial.training.intermediate_epochs,
        "training": {k: v for k, v in dataclasses.asdict(trial.training).items()
                     if k != "target_epochs" and k not in PER_TASK_CAPS},
        "num_workers": trial.resources.num_workers,
    }
    # Only the per-task caps of the tasks phase 2 trains on (training caps; evaluation caps, which
    # its dev scores and early stopping follow): a target's cap must not retrain it.
    phase2_tasks = {parse_source(source)[0] for source in phase2_sources(trial)}
    for name in PER_TASK_CAPS:
        caps = {k: v for k, v in (getattr(trial.training, name) or {}).items() if k in phase2_tasks}
        if caps:
            fields[name] = dict(sorted(caps.items()))
    # A mixture is keyed by what it trains on, not by its name (a single task or "task@lang" is
    # its own name, so earlier cache entries stay hits).
    sources = phase2_sources(trial)
    if len(sources) > 1:
        fields["intermediate_task"] = list(sources)
        mixture = trial.intermediate_mixture
        fields["sampling"] = [mixture.sampling, mixture.temperature]
        if mixture.weights:
            fields["weights"] = list(mixture.weights)
    # An arm's own MLM weight (absent otherwise, so every earlier key stays the same)
    if trial.intermediate_mixture is not None and trial.intermediate_mixture.mlm_weight is not None:
        fields["mlm_weight"] = trial.intermediate_mixture.mlm_weight
    return fields


def phase_cache_for(trial: TrialConfig, on_event=None) -> PhaseCache:
    """The study's phase cache; on an object store its leases come from the cluster's arbiter."""
    leases = None
    if is_uri(trial.phase_cache_dir):
        from xstilts.trainables.leases import LeaseClient, lease_actor

        leases = LeaseClient(lease_actor(trial.phase_cache_dir))
    cache = PhaseCache(trial.phase_cache_dir, leases=leases)
    if on_event is not None:
        cache.on_event = on_event
    return cache


def intermediate_encoder(trial: TrialConfig, trial_id: str, run: TrialRun) -> str:
    """Phase 2: the encoder fine-tuned on the intermediate task, from the cache or trained now.

    Returns where the encoder is (a local folder or a URI; phase 3's workers copy a URI to
    their node). The phase-2 Ray Train run is named by the cache key, not the trial: a trial
    that takes over the lease of one that died resumes that run from its last checkpoint.
    """
    events: list[str] = []

    def on_event(message: str) -> None:
        events.append(message)
        print(f"phase cache: {message}", flush=True)

    cache = phase_cache_for(trial, on_event)
    fields = intermediate_cache_fields(trial)
    key = cache_key(fields)

    def build(store):
        sources = phase2_sources(trial)
        mixture = dataclasses.replace(trial.intermediate_mixture or TaskMixture(sources), tasks=sources)
        phase = PhaseConfig.for_trial(trial, "intermediate", parse_source(sources[0])[0], trial.model_path,
                                      trial.intermediate_lr, trial.training.intermediate_epochs, mixture, run.run_id)
        started = time.time()
        result = _fit(phase, trial, f"intermediate-{key}", report_to_tune=False)
        if result.error:
            raise result.error
        with result.checkpoint.as_directory() as directory:
            summary = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
            return store(Path(directory) / ENCODER_DIR,
                         {"trained_by_trial": trial_id, "study_name": trial.study_name, "seconds": time.time() - started,
                          "metrics": summary, "fields": fields})

    manifest, hit = cache.get_or_build(key, build)
    tags = {"xstilts.phase_cache": "hit" if hit else "miss", "xstilts.phase_cache_key": key}
    if events:  # a corrupt or partial entry was found and rebuilt: say so on the run
        tags["xstilts.phase_cache_rebuilt"] = "; ".join(events)[:4000]
    run.set_tags(tags)
    run.log_metrics({METRIC_PHASE_CACHE_HIT: float(hit)})
    if hit:  # the phase-2 numbers of the trial that trained it, so every trial shows them
        run.log_metrics({k: v for k, v in manifest["metadata"]["metrics"].items() if k.startswith(INTERMEDIATE_PREFIX)})
    return cache.entry_ref(key)


# Where a retrieval trial's selection value comes from (there is no English dev to select on).
TAG_RETRIEVAL_SELECTION = "xstilts.selection_source"
RETRIEVAL_SELECTION = "mean over the task's languages (retrieval: no English dev; selection sees target languages)"


def retrieval_target(trial: TrialConfig, target, encoder: str, run: TrialRun) -> dict[str, float]:
    """A retrieval target has no phase 3: the phase-2 encoder (or the pretrained model for
    `none`) embeds every language's dev corpus (xstilts.tasks.retrieval), and those scores are final.

    Selection value, honestly labelled: retrieval has no English dev set (en-en retrieval is
    trivial), so `final/en_dev_score` holds the mean over the task's languages of its metric,
    the same number as `final/all_languages_mean`; the run is tagged with
    TAG_RETRIEVAL_SELECTION to say so. Choosing among trials by it uses target-language dev
    data, which a zero-shot target with an English dev never does; BUCC's F1 is moreover at the
    threshold chosen on that same dev data (XTREME's dev procedure), an optimistic estimate.

    Logs `final/dev/<lang>/<metric>` (BUCC also the chosen threshold), the means, and
    `en_dev_score` at step 1; tags the checkpoint as the encoder folder; finishes the run.
    Returns the final metrics (for the Tune report).
    """
    import math

    import torch
    from transformers import AutoTokenizer

    from xstilts.tasks import DataOptions
    from xstilts.tasks.retrieval import evaluate_retrieval, load_encoder, resolve_layer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(to_local(trial.model_path))  # phase 3's tokenizer source, too
    model = load_encoder(to_local(encoder)).to(device)
    layer = resolve_layer(model.config.num_hidden_layers, trial.retrieval_layer)
    run.log_params({PARAM_RETRIEVAL_LAYER: layer})
    options = DataOptions(trial.data_dir, trial.training.eval_cap(target.name), trial.seed, trial.data_files)
    scores = evaluate_retrieval(target, model, tokenizer, options, layer=layer,
                                batch_size=trial.training.eval_batch_size, max_length=trial.training.max_length,
                                device=device)
    final: dict[str, float] = {}
    for language, values in scores.items():
        for name, value in values.items():
            if math.isfinite(value):  # a BUCC threshold is +inf when there was nothing to mine
                final[final_dev(language, name)] = value
    # Over the languages that were scored (those with local data; xstilts.tasks.retrieval.evaluate_retrieval).
    final.update(summarize_final({l: values[target.metric] for l, values in scores.items()}, target.train_language))
    final[FINAL_EN_DEV] = final[FINAL_ALL_LANGUAGES]  # no English dev: the mean selects (docstring)
    run.log_metrics({EPOCH_EN_DEV: final[FINAL_EN_DEV]}, step=1)
    run.log_metrics(final, step=1)
    run.set_tags({TAG_CHECKPOINT: encoder, TAG_RETRIEVAL_SELECTION: RETRIEVAL_SELECTION})
    run.finish("FINISHED")
    return final


def run_trial(config: dict) -> None:
    """The Tune trainable: a plain function of the trial's config."""
    import ray.tune

    trial = TrialConfig.from_tune_config(config)
    stop_event = tune_stop_event()
    context = ray.tune.get_context()
    trial_id = context.get_trial_id()
    target = get_task(trial.target_task)
    run = TrialRun.open(
        trial.mlflow_tracking_uri, trial.mlflow_experiment_id, trial.mlflow_parent_run_id, trial_id,
        run_name=f"{trial.target_task}-{trial.intermediate_task}-{trial_id}",
        tags={TAG_STUDY: trial.study_name, TAG_TARGET: trial.target_task,
              TAG_INTERMEDIATE: trial.intermediate_task, TAG_SELECTION_METRIC: target.metric},
    )
    if run.finished_metrics is not None:  # already done before a driver crash: report, don't re-run
        ray.tune.report(run.finished_metrics)
        return
    holding = contextlib.ExitStack()  # the phase-cache entry this trial reads, marked in use
    try:
        run.log_params(trial_params(trial))
        encoder = trial.model_path
        if trial.intermediate_task != NONE:
            encoder = intermediate_encoder(trial, trial_id, run)
            # Until the trial ends (a restarted phase-3 worker reads the encoder again), so that
            # `xstilts cache prune` leaves the entry alone.
            key = encoder.rstrip("/").rsplit("/", 1)[-1]
            holding.enter_context(in_use(PhaseCache(trial.phase_cache_dir), key, trial_id))
        if not kind_of(target).trainable:
            final = retrieval_target(trial, target, encoder, run)
            # One report, the run already finished (nothing is left to lose if Tune stops the
            # trial here). It counts as the last target epoch: retrieval has no epochs to prune
            # between, and an earlier epoch would read as "stopped early by the scheduler".
            ray.tune.report({**final, TARGET_EPOCH: trial.training.target_epochs,
                             EPOCH_EN_DEV: final[FINAL_EN_DEV]})
            return
        if trial.target_train == "per_language":
            final = per_language_target(trial, target, encoder, trial_id, run)
            run.log_metrics(final, step=trial.training.target_epochs)
            ray.tune.report({**final, TARGET_EPOCH: trial.training.target_epochs, EPOCH_EN_DEV: final[FINAL_EN_DEV]})
            run.finish("FINISHED")
            return
        sources = target_sources(trial, target)  # translate-train: every language's split, proportionally
        phase = PhaseConfig.for_trial(trial, "target", trial.target_task, encoder, trial.target_lr,
                                      trial.training.target_epochs, TaskMixture(sources) if sources else None, run.run_id)
        result = _fit(phase, trial, f"{trial_id}-target", report_to_tune=True)
        if result.error:
            raise result.error
        final = {k: v for k, v in result.metrics.items() if k.startswith(FINAL_PREFIX)}
        run.log_metrics(final, step=trial.training.target_epochs)
        run.set_tags({TAG_CHECKPOINT: uri_of(result.checkpoint.filesystem, result.checkpoint.path)})
        # The last result again, from the trial itself: when a resumed study restarts this trial
        # and Ray Train finds its run already complete, fit() returns without a single new report,
        # and Tune (and Optuna) would be left without the trial's metric.
        ray.tune.report({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
        run.finish("FINISHED")
    except BaseException as error:
        # Tune's early stop (ASHA) is not a failure. It reaches the trial as sys.exit(0) from its
        # reporting thread, or, when it lands while Ray Train is running, as ActorDiedError from
        # fit(): tearing the trial's actor down kills the Train controller it owns. The run is
        # closed as KILLED, as the study's callback closes it (a FAILED written after that would win;
        # the callback's stopped-early tag says so too when the stop event could not be read).
        stopped = isinstance(error, SystemExit) or (stop_event is not None and stop_event.is_set())
        if stopped or run.stopped_by_study():
            try:
                run.set_tags({TAG_STOPPED_EARLY: "true"})
                run.finish("KILLED")
            finally:
                raise
        # Recorded as failed with its error; Tune records the trial as errored and the study goes on.
        message = "".join(traceback.format_exception_only(type(error), error)).strip()
        try:
            run.set_tags({TAG_ERROR: message[:4000]})
            run.finish("FAILED")
        finally:
            raise
    finally:
        holding.close()  # the entry's marker says "last used now", no longer in use
