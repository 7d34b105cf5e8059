"""Running a study: Ray (local or a cluster), one Tuner per target task, the MLflow parent run.

A study searches each target task separately (its own Optuna sampler and ASHA scheduler, since
accuracy on XNLI and F1 on PAN-X are not comparable numbers) but within one Ray runtime, one
MLflow parent run and one phase cache, so intermediate trainings are shared across targets.
"""
from __future__ import annotations

import contextlib
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

from study.config import ConfigError, StudyConfig, sqlite_path
from xstilts_storage import Location, StorageError, child, is_uri, probe
from study.search import make_scheduler, make_searcher
from tasks import get_task
from tasks.record_schema import FINAL_EN_DEV

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


def resolve(config: StudyConfig, name: str | None = None) -> ResolvedStudy:
    storage = Location(config.storage_path).ref  # a local path made absolute, or the URI as is
    uri = config.mlflow.tracking_uri
    if uri.startswith("sqlite:"):
        uri = "sqlite:///" + str(Path(sqlite_path(uri)).expanduser().absolute())
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
    from study.probes import run_with_deadline

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
    from study.tracking import study_exists

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

    from study.config import check_name, load_yaml_text, parse_config, read_config_file
    from tasks.record_schema import TAG_KIND, TAG_STUDY

    check_name(name, "NAME")  # nothing unchecked reaches the MLflow filter string below
    if tracking_uri.startswith("sqlite:"):
        tracking_uri = "sqlite:///" + str(Path(sqlite_path(tracking_uri)).expanduser().absolute())
        if not os.path.exists(sqlite_path(tracking_uri)):
            raise ConfigError("--tracking-uri", f"no MLflow store at {tracking_uri}", "pass the store the study was run with")
    check_tracking_server(tracking_uri)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = [] if found is None else client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'study' and tags.`{TAG_STUDY}` = '{name}'", max_results=1)
    if not runs:
        raise ConfigError("NAME", f"no study named {name!r} in experiment {experiment!r} at {tracking_uri}",
                          "`xstilts analyze --list` shows the studies there")
    run = runs[0]
    with tempfile.TemporaryDirectory() as folder:
        config_path = client.download_artifacts(run.info.run_id, "study_config.yaml", folder)
        text = read_config_file(config_path, "the stored study config")  # size, UTF-8, a regular file
        config = parse_config(load_yaml_text(text, "the stored study config"), "the stored study config")
    config = _real_tracking_uri(config, tracking_uri)
    check_storage_reachable(config.storage_path)
    return ResolvedStudy(config, name, config.storage_path, config.mlflow.tracking_uri), run.info.run_id


def _start_ray(address: str | None, max_concurrent: int, log) -> dict:
    import ray

    env = {"TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
           "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **_storage_env()}
    # Tune's own tables would interleave with our one-line-per-event progress (StudyProgress).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for key, value in env.items():
        os.environ.setdefault(key, value)  # local workers inherit the driver's environment
    runtime_env = {"env_vars": env}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        _pin_train_coordinator_here()
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
    # to loopback only (_loopback_ray).
    with _loopback_ray():
        ray.init(address="local", resources={TRIAL_DRIVER_RESOURCE: max_concurrent}, runtime_env=runtime_env,
                 log_to_driver=False, dashboard_host="127.0.0.1", _node_ip_address=LOOPBACK)
    return {TRIAL_DRIVER_RESOURCE: 1}


LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def _loopback_ray():
    """While a local Ray starts: make its node address loopback, so that the GCS, the raylet, the
    object manager, the agents and the workers listen on 127.0.0.1 instead of every interface.

    Ray 2.60's `ray.init(_node_ip_address="127.0.0.1")` alone is not enough: it replaces a
    loopback address by the machine's routable one (`services.resolve_ip_for_localhost`), unless
    Ray clusters are disabled, as Ray does by default on macOS and Windows for this very reason
    (`ray_constants.ENABLE_RAY_CLUSTER`, env RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER). That switch is
    turned off for the driver's `ray.init` only (not through the environment, which `ray start`
    of a later cluster in the same process tree would inherit); once started, every process of
    the runtime takes the node address from its command line. A Ray without that constant (a
    later release binding to the node address) gets `_node_ip_address` as is.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # noqa: BLE001 - a Ray without it: _node_ip_address alone
        yield
        return
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    from unittest import mock

    with mock.patch.object(ray_constants, "ENABLE_RAY_CLUSTER", False):
        yield


def _pin_train_coordinator_here() -> None:
    """Create Ray Train's autoscaling coordinator on the driver's node before any trial does.

    Ray Train 2.60 creates it (a detached actor) on the node of the first Train run's
    controller: on an autoscaling cluster that is a worker node, which then never counts as
    idle and is never released (seen on the fake autoscaler). Created here first, on the head
    where the driver runs, every Train run finds it by name. A Ray internal: if it moved, the
    cost is only that one node outlives the study, so failures are ignored.
    """
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator)

        get_or_create_autoscaling_coordinator()
    except Exception:  # noqa: BLE001
        pass


def _study_params(study: ResolvedStudy, model_path: str) -> dict:
    """The parent run's params; any secret inside a URI among them is redacted (`alice:***@`)."""
    from study.tracking import redact_uri

    c = study.config
    params = {
        "model": c.model, "model_path": model_path, "target_tasks": ",".join(c.target_tasks),
        "intermediate_tasks": ",".join(c.intermediate_tasks), "num_samples_per_target": c.num_samples,
        "search.sampler": c.search.sampler, "search.scheduler": c.search.scheduler, "search.seed": c.search.seed,
        "storage_path": study.storage_path, "seed": c.seed, "mlflow.tracking_uri": study.tracking_uri,
    }
    return {k: redact_uri(v) if isinstance(v, str) else v for k, v in params.items()}


def _config_yaml(study: ResolvedStudy) -> str:
    """The study's config as run, with absolute paths: what `xstilts resume` reads back.

    The tracking URI's secrets are redacted (study.tracking.redact_uri): `resume` connects with
    the URI it is given and puts that back in place of the redacted one (`_real_tracking_uri`).
    """
    from study.tracking import redact_uri

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
    from study.tracking import is_redacted

    if not is_redacted(config.mlflow.tracking_uri):
        return config
    return dataclasses.replace(config, mlflow=dataclasses.replace(config.mlflow, tracking_uri=tracking_uri))


def make_tuner(trainable, config: StudyConfig, target_index: int, param_space: dict, tune_dir: str, callbacks: list):
    """The Tune search of one target task (also what benchmarks/driver_scale.py drives)."""
    from ray import tune

    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            # metric/mode live on the searcher and the scheduler (OptunaSearch with its own
            # define-by-run space does not take them from here); the ConcurrencyLimiter
            # around the searcher is what bounds concurrent trials.
            search_alg=make_searcher(config, target_index), scheduler=make_scheduler(config),
            num_samples=config.num_samples,
        ),
        run_config=tune.RunConfig(
            name=config.target_tasks[target_index], storage_path=tune_dir, verbose=0,
            callbacks=callbacks, failure_config=tune.FailureConfig(max_failures=0),
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


def run_study(study: ResolvedStudy, address: str | None = None, log=print, resume_run_id: str | None = None) -> dict:
    """Run every target's search; return {target: number of completed trials}.

    With `resume_run_id` (the parent run of an interrupted study), each target's Tune experiment
    is restored from its storage: finished trials are kept, unfinished ones run again under the
    same trial ids (so they log into their existing MLflow runs, and their Ray Train runs resume
    from their last checkpoints), and the search continues up to num_samples.
    """
    import mlflow.tracking
    import ray
    from ray import tune

    from study.storage import alive_node_count, check_storage_shared
    from study.tracking import (StudyProgress, begin_study_session, ensure_experiment, finish_study_run,
                                start_study_run)
    from trainables.mlflow_retry import call_with_retry
    from trainables.embedded_model import publish_embedded_model
    from trainables.trial import run_trial

    c = study.config
    started = time.time()
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Ray first: whether the storage path must be shared depends on the cluster's node count,
    # and a refused study must leave nothing behind (no folder, no MLflow run).
    trial_resources = _start_ray(address, c.max_concurrent_trials, log)
    try:
        check_storage_shared(study.storage_path, alive_node_count())
    except ConfigError:
        ray.shutdown()
        raise
    if not is_uri(study.storage_path):
        Path(study.storage_path).mkdir(parents=True, exist_ok=True)
    if study.tracking_uri.startswith("sqlite:"):
        Path(sqlite_path(study.tracking_uri)).parent.mkdir(parents=True, exist_ok=True)
    model_path = c.model
    if c.uses_embedded_model:
        # Under the storage path so that every node of the cluster can read it.
        model_path = publish_embedded_model(child(study.storage_path, "embedded_models"), log=log)
    if is_uri(study.phase_cache_dir):
        from trainables.leases import lease_actor

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
    log(f"study {study.name}: {len(c.target_tasks)} target task(s) x {c.num_samples} trials, "
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
        for index, target in enumerate(c.target_tasks):
            task = get_task(target)
            base = {
                "study_name": study.name, "target_task": target, "model_path": model_path, "seed": c.seed,
                "storage_path": study.storage_path, "phase_cache_dir": study.phase_cache_dir,
                "mlflow_tracking_uri": study.tracking_uri, "mlflow_experiment_id": experiment_id,
                "mlflow_parent_run_id": parent_run_id, "data_dir": c.data_dir, "data_files": c.data_files,
                "feature_cache_dir": study.feature_cache_dir,
                "intermediate_catalog": c.intermediate_catalog(),
                "training": dataclasses.asdict(c.training), "resources": dataclasses.asdict(c.resources),
            }
            log(f"--- target task {target} ({task.kind}, selection metric: English dev {task.metric}) ---")
            progress = StudyProgress(study.tracking_uri, experiment_id, parent_run_id, target, task.metric,
                                     c.training.target_epochs, c.num_samples)
            trainable = tune.with_resources(run_trial, trial_resources)
            experiment_path = child(study.study_dir, "tune", target)
            if resume_run_id and tune.Tuner.can_restore(experiment_path):
                log(f"resuming the search of {target} from {experiment_path}")
                results = tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True,
                                             resume_errored=False, restart_errored=False).fit()
                completed[target] = _completed(results)
                continue
            tuner = make_tuner(trainable, c, index, base, child(study.study_dir, "tune"), [progress])
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
