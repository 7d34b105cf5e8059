"""Running a study: Ray (local or a cluster), one Tuner per target task, the MLflow parent run.

A study searches each target task separately (its own Optuna sampler and ASHA scheduler, since
accuracy on XNLI and F1 on PAN-X are not comparable numbers) but within one Ray runtime, one
MLflow parent run and one phase cache, so intermediate trainings are shared across targets.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from xstilts.mlflow_store import absolute_sqlite_uri, find_study_run, sqlite_path
from xstilts.trainables.config import CATALOG_KEY
from xstilts.study.config import ConfigError, StudyConfig
from xstilts.storage import Location, StorageError, child, is_uri, probe
from xstilts.study.search import make_scheduler, make_searcher, repeat_seeds, trials_per_target
from xstilts.tasks import get_task
from xstilts.tasks.record_schema import FINAL_EN_DEV

TRIAL_DRIVER_RESOURCE = "TRAIN_DRIVER"  # a trial's own process needs ~no CPU; its Train workers do
TRIAL_DRIVER_CPU = 0.01  # its request where the cluster has no TRAIN_DRIVER slots


@dataclass(frozen=True)
class ResolvedStudy:
    config: StudyConfig
    name: str
    storage_path: str  # absolute, or a URI (s3://...)
    tracking_uri: str  # sqlite paths made absolute: Ray workers run in other directories

    @property
    def study_dir(self) -> str:
        return child(self.storage_path, self.name)

    @property
    def feature_cache_dir(self) -> str:
        return child(self.storage_path, "feature_cache")  # tokenized splits, shared like the phase cache

    @property
    def phase_cache_dir(self) -> str:
        # Shared by every study with this storage path: a phase 2 is trained once across studies.
        return child(self.storage_path, "phase_cache")


    @property
    def optuna_storage(self) -> str | None:
        """The RDB URL of the study's Optuna studies (one per target), or None (in memory)."""
        value = self.config.search.optuna_storage
        if value == "none":
            return None
        if value != "auto":
            return value
        if self.tracking_uri.startswith("sqlite:"):  # beside the MLflow store: one folder holds both
            return "sqlite:///" + str(Path(sqlite_path(self.tracking_uri)).parent / "optuna.db")
        if not is_uri(self.storage_path):
            return "sqlite:///" + str(Path(self.storage_path) / "optuna.db")
        return None  # object storage and a tracking server: name an RDB in search.optuna_storage

    def optuna_study_name(self, target: str) -> str:
        return f"{self.name}/{target}"


def resolve(config: StudyConfig, name: str | None = None) -> ResolvedStudy:
    storage = Location(config.storage_path).ref  # a local path made absolute, or the URI as is
    uri = config.mlflow.tracking_uri
    uri = absolute_sqlite_uri(uri)
    # Local paths become absolute here: trials may run in another working directory (or node).
    changes = {}
    if config.data_dir is not None:
        changes["data_dir"] = str(Path(config.data_dir).expanduser().absolute())
    elif config.data_files:
        changes["data_files"] = {k: str(Path(v).expanduser().absolute()) for k, v in config.data_files.items()}
    model = config.model
    if not config.uses_embedded_model and os.path.isdir(os.path.expanduser(model)):
        changes["model"] = str(Path(model).expanduser().absolute())
    if changes:
        config = dataclasses.replace(config, **changes)
    return ResolvedStudy(config, name or f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage, uri)


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking URI must answer before anything starts."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise ConfigError("mlflow.tracking_uri", f"no MLflow server answers at {uri} ({getattr(error, 'reason', error)})",
                          "start it (mlflow server ...) or fix --tracking-uri") from None


STORAGE_PROBE_DEADLINE_S = 25.0


def check_storage_reachable(storage_path: str) -> None:
    """An object-store storage path must be reachable and writable with the credentials at hand."""
    from xstilts.study.probes import run_with_deadline

    def check() -> None:
        try:
            probe(storage_path)
        except StorageError as error:
            raise ConfigError("storage_path", error.message, error.fix) from None

    # The object store client retries with bounded waits; the deadline bounds the whole probe.
    run_with_deadline(STORAGE_PROBE_DEADLINE_S, check, lambda: ConfigError(
        "storage_path", f"no answer from the object store behind {storage_path!r} within {STORAGE_PROBE_DEADLINE_S:.0f} s",
        "check AWS_ENDPOINT_URL (an S3-compatible server) or the network to the object store"))


# Non-secret settings of object stores that every node's processes need alike; credentials are
# never copied (nodes take them from their own environment or instance profile).
STORAGE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL")


def _storage_env() -> dict:
    env = {k: os.environ[k] for k in STORAGE_ENV if os.environ.get(k)}
    # MLflow's S3 artifact repository reads its own variable for an S3-compatible endpoint.
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint and "MLFLOW_S3_ENDPOINT_URL" not in env:
        env["MLFLOW_S3_ENDPOINT_URL"] = endpoint
    return env


def preflight(study: ResolvedStudy) -> None:
    """Checks that need the outside world; still before Ray and before any MLflow write."""
    from xstilts.study.study_run import study_exists

    check_tracking_server(study.tracking_uri)
    check_storage_reachable(study.storage_path)
    if study.tracking_uri.startswith("sqlite:") and not os.path.exists(sqlite_path(study.tracking_uri)):
        return  # a new store: nothing to collide with (and opening it would create it)
    if study_exists(study.tracking_uri, study.config.mlflow.experiment, study.name):
        raise ConfigError("--name", f"a study named {study.name!r} already exists in experiment "
                          f"{study.config.mlflow.experiment!r}",
                          f"choose another --name, or continue it with `xstilts resume {study.name}`")


def load_for_resume(tracking_uri: str, experiment: str, name: str) -> tuple[ResolvedStudy, str]:
    """The interrupted study `name` as it was run (its config is stored on its MLflow parent run)."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from xstilts.study.config import check_name, load_yaml_text, parse_config, read_config_file

    check_name(name, "NAME")  # nothing unchecked reaches the MLflow filter string below
    if tracking_uri.startswith("sqlite:"):
        tracking_uri = absolute_sqlite_uri(tracking_uri)
        if not os.path.exists(sqlite_path(tracking_uri)):
            raise ConfigError("--tracking-uri", f"no MLflow store at {tracking_uri}", "pass the store the study was run with")
    check_tracking_server(tracking_uri)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    run = None if found is None else find_study_run(client, found.experiment_id, name)
    if run is None:
        raise ConfigError("NAME", f"no study named {name!r} in experiment {experiment!r} at {tracking_uri}",
                          "`xstilts analyze --list` shows the studies there")
    with tempfile.TemporaryDirectory() as folder:
        config_path = client.download_artifacts(run.info.run_id, "study_config.yaml", folder)
        text = read_config_file(config_path, "the stored study config")  # size, UTF-8, a regular file
        config = parse_config(load_yaml_text(text, "the stored study config"), "the stored study config")
    config = _real_tracking_uri(config, tracking_uri)
    check_storage_reachable(config.storage_path)
    return ResolvedStudy(config, name, config.storage_path, config.mlflow.tracking_uri), run.info.run_id


def _trial_env(tracking_uri: str) -> dict:
    """Environment every Ray worker of the study gets beyond the defaults: the real tracking URI
    when it holds a secret (trials get it redacted in their Tune config; TRACKING_URI_ENV)."""
    from xstilts.study.study_run import redact_uri
    from xstilts.trainables.config import TRACKING_URI_ENV

    return {TRACKING_URI_ENV: tracking_uri} if redact_uri(tracking_uri) != tracking_uri else {}


def _start_ray(address: str | None, max_concurrent: int, log, extra_env: dict | None = None) -> dict:
    import ray

    from xstilts.trainables.ray_compat import loopback_ray, pin_train_coordinator_here

    env = {"TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
           "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **_storage_env(),
           **(extra_env or {})}
    # Tune's own tables would interleave with our one-line-per-event progress (StudyProgress).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for key, value in env.items():
        os.environ.setdefault(key, value)  # local workers inherit the driver's environment
    runtime_env = {"env_vars": env}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        pin_train_coordinator_here()
        cluster = ray.cluster_resources()
        if cluster.get(TRIAL_DRIVER_RESOURCE, 0) >= 1:
            return {TRIAL_DRIVER_RESOURCE: 1}
        # A whole CPU per waiting trial process deadlocked an autoscaling cluster of small nodes
        # (the trial processes held every CPU, their Train workers never got one); a sliver keeps
        # the request valid ({"CPU": 0} is refused) and lets the autoscaler size nodes by the
        # Train workers' demand.
        log(f"note: the cluster has no {TRIAL_DRIVER_RESOURCE} resource (yet); each trial's own process asks for "
            f"{TRIAL_DRIVER_CPU} CPU (start the head with --resources '{{\"{TRIAL_DRIVER_RESOURCE}\": N}}' to place "
            f"them there, as cluster.yaml does)")
        return {"CPU": TRIAL_DRIVER_CPU}
    # address="local" always starts a fresh runtime (a stale /tmp/ray file would join a dead one).
    # Keep the dashboard (bound to 127.0.0.1): without its agent, trials stopped by ASHA leaked
    # their placement groups and the study hung. Nothing else reaches a local runtime: it binds
    # to loopback only (xstilts.trainables.ray_compat.loopback_ray).
    with loopback_ray():
        ray.init(address="local", resources={TRIAL_DRIVER_RESOURCE: max_concurrent}, runtime_env=runtime_env,
                 log_to_driver=False, dashboard_host="127.0.0.1", _node_ip_address=LOOPBACK)
    return {TRIAL_DRIVER_RESOURCE: 1}


LOOPBACK = "127.0.0.1"


def _study_params(study: ResolvedStudy, model_path: str) -> dict:
    """The parent run's params; any secret inside a URI among them is redacted (`alice:***@`)."""
    from xstilts.study.study_run import redact_uri

    c = study.config
    params = {
        "model": c.model, "model_path": model_path, "target_tasks": ",".join(c.target_tasks),
        "intermediate_tasks": ",".join(c.intermediate_tasks), "num_samples_per_target": c.num_samples,
        "search.sampler": c.search.sampler, "search.scheduler": c.search.scheduler, "search.seed": c.search.seed,
        "storage_path": study.storage_path, "seed": c.seed, "mlflow.tracking_uri": study.tracking_uri,
        "search.optuna_storage": study.optuna_storage or "none",
        "search.optuna_study": study.optuna_study_name("<target task>"),
    }
    return {k: redact_uri(v) if isinstance(v, str) else v for k, v in params.items()}


def _config_yaml(study: ResolvedStudy) -> str:
    """The study's config as run, with absolute paths: what `xstilts resume` reads back.

    The tracking URI's secrets are redacted (xstilts.study.study_run.redact_uri): `resume` connects with
    the URI it is given and puts that back in place of the redacted one (`_real_tracking_uri`).
    """
    from xstilts.study.study_run import redact_uri

    config = dataclasses.replace(study.config, storage_path=study.storage_path,
                                 mlflow=dataclasses.replace(study.config.mlflow, tracking_uri=redact_uri(study.tracking_uri)))
    raw = dataclasses.asdict(config)
    raw["target_tasks"], raw["intermediate_tasks"] = list(config.target_tasks), list(config.intermediate_tasks)
    for mixture in raw["mixtures"].values():
        mixture["tasks"] = list(mixture["tasks"])
    for spec in raw["search_space"].values():
        spec["values"] = list(spec["values"])
    return yaml.safe_dump(raw, sort_keys=False)


def _real_tracking_uri(config: StudyConfig, tracking_uri: str) -> StudyConfig:
    """A stored config whose tracking URI was redacted by `_config_yaml`, with the real URI that
    `resume` reached the study with."""
    from xstilts.study.study_run import is_redacted

    if not is_redacted(config.mlflow.tracking_uri):
        return config
    return dataclasses.replace(config, mlflow=dataclasses.replace(config.mlflow, tracking_uri=tracking_uri))


def trial_base_config(study: ResolvedStudy, target: str, model_path: str, experiment_id: str,
                      parent_run_id: str) -> dict:
    """The study-wide part of every trial's Tune config (the search space adds its point).

    Tune writes it to each trial's params.json under the storage path, so a secret in the
    tracking URI is redacted here; trials connect with the real URI from their environment
    (`_trial_env`, `xstilts.trainables.config.trial_tracking_uri`).
    """
    from xstilts.study.study_run import redact_uri

    c = study.config
    return {
        "study_name": study.name, "target_task": target, "model_path": model_path, "seed": c.seed,
        "storage_path": study.storage_path, "phase_cache_dir": study.phase_cache_dir,
        "mlflow_tracking_uri": redact_uri(study.tracking_uri), "mlflow_experiment_id": experiment_id,
        "mlflow_parent_run_id": parent_run_id, "data_dir": c.data_dir, "data_files": c.data_files,
        "feature_cache_dir": study.feature_cache_dir,
        CATALOG_KEY: c.intermediate_catalog(),
        "training": dataclasses.asdict(c.training), "resources": dataclasses.asdict(c.resources),
    }


def make_tuner(trainable, config: StudyConfig, target_index: int, param_space: dict, tune_dir: str, callbacks: list,
               optuna_storage: str | None = None, optuna_study_name: str | None = None,
               intermediates: tuple[str, ...] | None = None):
    """The Tune search of one target task (also what benchmarks/driver_scale.py drives);
    `intermediates`: this target's choices when a ranking pruned them."""
    from ray import tune

    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            # metric/mode live on the searcher and the scheduler (OptunaSearch with its own
            # define-by-run space does not take them from here); the ConcurrencyLimiter
            # around the searcher is what bounds concurrent trials.
            search_alg=repeat_seeds(make_searcher(config, target_index, optuna_storage, optuna_study_name,
                                                  intermediates), config.seeds),
            scheduler=make_scheduler(config),
            num_samples=trials_per_target(config, target_index, intermediates),
        ),
        run_config=tune.RunConfig(
            name=config.target_tasks[target_index], storage_path=tune_dir, verbose=0,
            # Tune's retries of a failed trial; Ray Train's retries of a lost worker are
            # resources.max_failures, inside the trial (xstilts.trainables.trial._fit).
            callbacks=callbacks, failure_config=tune.FailureConfig(max_failures=config.resources.trial_max_failures),
        ),
    )


def _completed(results) -> int:
    return sum(1 for r in results if r.error is None and r.metrics.get(FINAL_EN_DEV) is not None)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_on_sigterm():
    """Make SIGTERM raise KeyboardInterrupt (as Ctrl-C does); returns the handler it replaced,
    or None where signals cannot be set (not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    return signal.SIG_DFL if previous is None else previous  # None: a handler set outside Python (Ray's)


def rank_intermediates(study: ResolvedStudy, log=print) -> dict[str, tuple[str, ...]]:
    """With `search.intermediates: {rank_with, keep}`: per target, `none` and the best `keep`
    intermediates by that score (xstilts.study.rank), in rank order; logged as a ranking run.
    Empty without the option (every target searches every intermediate of the config)."""
    chosen = study.config.search.intermediates
    if not chosen:
        return {}
    from xstilts.study.rank import log_ranking, rank_study
    from xstilts.study.search import prune_intermediates

    method, keep = chosen["rank_with"], chosen.get("keep", 3)
    result = rank_study(study, (method,))
    log_ranking(study, result)
    ranked = {}
    for target, found in result["targets"].items():
        ranked[target] = prune_intermediates(found["ranking"][method], keep, study.config.intermediate_tasks)
        log(f"{target}: searching {', '.join(ranked[target])} (top {keep} by {method}, and none)")
    return ranked


def ensure_model(study: ResolvedStudy, log=print) -> str:
    """The phase-1 model every trial starts from: the config's, or the embedded model, built once
    per storage path and published under it so that every node of the cluster can read it."""
    from xstilts.trainables.embedded_model import publish_embedded_model

    if not study.config.uses_embedded_model:
        return study.config.model
    return publish_embedded_model(child(study.storage_path, "embedded_models"), log=log)


def run_study(study: ResolvedStudy, address: str | None = None, log=print, resume_run_id: str | None = None,
              retry_errored: bool = True) -> dict:
    """Run every target's search; return {target: number of completed trials}.

    With `resume_run_id` (the parent run of an interrupted study), each target's Tune experiment
    is restored from its storage: finished trials are kept, unfinished ones run again under the
    same trial ids (so they log into their existing MLflow runs, and their Ray Train runs resume
    from their last checkpoints), and the search continues up to num_samples. With
    `retry_errored`, trials that failed run again too, under their trial ids and MLflow runs.
    """
    import mlflow.tracking
    import ray
    from ray import tune

    from xstilts.study.storage import alive_node_count, check_storage_shared
    from xstilts.study.study_run import (StudyProgress, begin_study_session, ensure_experiment, finish_study_run,
                                start_study_run)
    from xstilts.mlflow_store.retry import call_with_retry
    from xstilts.trainables.trial import run_trial

    c = study.config
    started = time.time()
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Ray first: whether the storage path must be shared depends on the cluster's node count,
    # and a refused study must leave nothing behind (no folder, no MLflow run).
    trial_resources = _start_ray(address, c.max_concurrent_trials, log, _trial_env(study.tracking_uri))
    try:
        check_storage_shared(study.storage_path, alive_node_count())
        if address:  # a local Ray was checked against this machine before it started
            from xstilts.study.cluster_fit import check_trial_fits

            check_trial_fits(c.resources, log)
    except ConfigError:
        ray.shutdown()
        raise
    if not is_uri(study.storage_path):
        Path(study.storage_path).mkdir(parents=True, exist_ok=True)
    if study.tracking_uri.startswith("sqlite:"):
        Path(sqlite_path(study.tracking_uri)).parent.mkdir(parents=True, exist_ok=True)
    model_path = ensure_model(study, log)
    if is_uri(study.phase_cache_dir):
        from xstilts.trainables.leases import lease_actor

        lease_actor(study.phase_cache_dir)  # the phase cache's lease arbiter, on the head node

    # MLflow's artifacts (reports, registered models) beside the study's storage, in the same bucket.
    artifact_root = child(study.storage_path, "mlflow-artifacts")
    experiment_id = ensure_experiment(study.tracking_uri, c.mlflow.experiment, artifact_root)
    client = mlflow.tracking.MlflowClient(study.tracking_uri)
    if resume_run_id:
        parent_run_id = resume_run_id
        call_with_retry(client.update_run, parent_run_id, status="RUNNING", what="reopening the study's run")
    else:
        parent_run_id = start_study_run(study.tracking_uri, experiment_id, study.name,
                                        _study_params(study, model_path), _config_yaml(study))
    seeds = f" (configurations x {c.seeds} seeds)" if c.seeds > 1 else ""
    grid = ", the whole grid" if c.search.sampler == "grid" else ""
    log(f"study {study.name}: {len(c.target_tasks)} target task(s) x {trials_per_target(c, 0)} trials{seeds}{grid}, "
        f"up to {c.max_concurrent_trials} at once; MLflow run {parent_run_id} in experiment {c.mlflow.experiment!r}")
    completed: dict[str, int] = {}
    status = "FAILED"
    session = None  # this driver session's wall time, added to the sessions before it (a resume)
    # Ctrl-C must stop the whole study: Tune's own SIGINT handler only ends the current target's
    # search, and the loop would start the next one. Without it, KeyboardInterrupt reaches us;
    # Tune saves its state as it goes, so `xstilts resume NAME` continues (as after a lost driver).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # SIGTERM (`kill`, a job scheduler, a preempted head node) stops the study the same way.
    previous_sigterm = _stop_on_sigterm()
    try:
        session = begin_study_session(study.tracking_uri, parent_run_id, started)
        ranked = rank_intermediates(study, log)
        for index, target in enumerate(c.target_tasks):
            task = get_task(target)
            base = trial_base_config(study, target, model_path, experiment_id, parent_run_id)
            log(f"--- target task {target} ({task.kind}, selection metric: English dev {task.metric}) ---")
            progress = StudyProgress(study.tracking_uri, experiment_id, parent_run_id, target, task.metric,
                                     c.training.target_epochs, trials_per_target(c, index, ranked.get(target)))
            trainable = tune.with_resources(run_trial, trial_resources)
            experiment_path = child(study.study_dir, "tune", target)
            if resume_run_id and tune.Tuner.can_restore(experiment_path):
                log(f"resuming the search of {target} from {experiment_path}")
                # Errored trials come back with Tune's resume_errored, not restart_errored: a
                # restarted trial gets a new trial id (a second MLflow run, and OptunaSearch,
                # which never saw that id, fails on its first result). Resumed, it keeps its id
                # and run; our trials keep no Tune checkpoint, so it starts over, and its phases
                # resume from their Ray Train checkpoints and the phase cache.
                results = tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True,
                                             resume_errored=retry_errored, restart_errored=False).fit()
                completed[target] = _completed(results)
                continue
            tuner = make_tuner(trainable, c, index, base, child(study.study_dir, "tune"), [progress],
                               study.optuna_storage, study.optuna_study_name(target), ranked.get(target))
            completed[target] = _completed(tuner.fit())
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"  # resumable: `xstilts resume NAME`
        raise
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        try:
            finish_study_run(study.tracking_uri, parent_run_id, status, time.time() - started, session=session)
        finally:
            ray.shutdown()
    seconds = time.time() - started
    if session is not None and session.index:
        log(f"study {study.name} done in {seconds:.0f}s ({session.previous_seconds + seconds:.0f}s over "
            f"{session.index + 1} sessions)")
    else:
        log(f"study {study.name} done in {seconds:.0f}s")
    return completed
