"""The study's side of MLflow: the experiment, the parent run, and a Tune callback that closes
trial runs the trial itself could not close (a trial stopped by ASHA is killed mid-run) and
prints progress.

Every MLflow call here goes through `call_with_retry`: a tracking server that is away for a while
(restarted, a network blip) delays the driver instead of crashing the study. A Tune callback that
raises would end the whole study, so the callback's MLflow bookkeeping, when it still fails after
the retries, is reported as one line and skipped.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from xstilts.storage import is_uri

from mlflow.tracking import MlflowClient
from ray.tune import Callback

from xstilts.study.search import SELECTION_METRIC, TIME_ATTR
from xstilts.tasks.record_schema import STUDY_SESSION_SECONDS, STUDY_SESSIONS, STUDY_WALL_SECONDS, FINAL_ZERO_SHOT, TAG_ERROR, TAG_KIND, TAG_STOPPED_EARLY, TAG_STUDY
from xstilts.mlflow_store import call_with_retry, find_study_run, find_trial_run
from xstilts.mlflow_store.runs import STUDY_KIND


REDACTED = "***"
_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token", "key", "credential", "signature")


def redact_uri(uri: str) -> str:
    """`uri` with its secrets replaced by `***`, for anything printed or logged: the password of
    its user info (`postgresql://alice:secret@host/db` -> `postgresql://alice:***@host/db`) and
    the values of query parameters named like a secret (`?password=`, `?token=`, `?sslkey=`...).
    Anything that is not a URI with such parts is returned as is. Connect with the real URI."""
    if not isinstance(uri, str) or "://" not in uri:
        return uri
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{host}"
    if query:
        pairs = []
        for pair in query.split("&"):
            name, sep, value = pair.partition("=")
            if sep and value and any(k in name.lower() for k in _SECRET_QUERY_KEYS):
                value = REDACTED
            pairs.append(f"{name}{sep}{value}")
        query = "&".join(pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_redacted(uri: str) -> bool:
    """Whether `uri` is what redact_uri made of one with a secret (the secret is not in it)."""
    return isinstance(uri, str) and REDACTED in uri and redact_uri(uri) == uri


def study_exists(tracking_uri: str, experiment: str, name: str) -> bool:
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return False
    return find_study_run(client, found.experiment_id, name) is not None


def ensure_experiment(tracking_uri: str, experiment: str, artifact_root: str | None) -> str:
    """The experiment id, creating it (with artifacts beside the study storage) if needed."""
    client = MlflowClient(tracking_uri)

    def find_or_create() -> str:  # repeatable: a lost create answer is found by name next time
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        location = None
        if artifact_root:  # an object-store URI as is (MLflow's S3/GCS artifact repositories)
            location = artifact_root if is_uri(artifact_root) else Path(artifact_root).absolute().as_uri()
        return client.create_experiment(experiment, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})

    experiment_id = call_with_retry(find_or_create, what="creating the MLflow experiment")
    # Also on an experiment made before (or by hand): MLflow 3 then opens it on its runs page.
    found = client.get_experiment(experiment_id)
    if found.tags.get(EXPERIMENT_KIND_TAG) is None:
        call_with_retry(client.set_experiment_tag, experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND,
                        what="marking the MLflow experiment as model training")
    return experiment_id


# MLflow 3's UI shows an experiment by its kind: without this tag it opens on a GenAI overview
# ("No data available") and the trials are a click away; this kind opens the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def start_study_run(tracking_uri: str, experiment_id: str, name: str, params: dict, config_yaml: str) -> str:
    from mlflow.entities import Param

    client = MlflowClient(tracking_uri)

    def find_or_create() -> str:  # repeatable: a lost create answer is found by its tags next time
        found = find_study_run(client, experiment_id, name)
        if found is not None:
            return found.info.run_id
        return client.create_run(experiment_id, run_name=name, tags={TAG_KIND: STUDY_KIND, TAG_STUDY: name}).info.run_id

    run_id = call_with_retry(find_or_create, what="creating the study's MLflow run")
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        call_with_retry(client.log_batch, run_id, params=items[start:start + 100], what="logging study params")
    call_with_retry(client.log_text, run_id, config_yaml, "study_config.yaml", what="logging the study config")
    return run_id


# The parent run's wall-time metrics. A study runs in one or more driver sessions (`xstilts run`,
# then one per `xstilts resume`); each session's seconds are logged at the session's index as the
# step, and the study's wall time is their sum (logged at the same step, so it is the latest value).
HEARTBEAT_SECONDS = 30.0
_ACTIVE_SESSIONS: dict[str, "StudySession"] = {}  # parent run id -> this driver's session of it


def _latest_per_step(history) -> dict[int, float]:
    """{step: the value logged last at that step} of a metric history."""
    latest: dict[int, tuple] = {}
    for point in history:
        mark = (point.timestamp, point.value)
        if point.step not in latest or mark > latest[point.step]:
            latest[point.step] = mark
    return {step: value for step, (_, value) in latest.items()}


class StudySession:
    """One driver session of a study, and the wall time of the sessions before it.

    A session's seconds are logged when it ends (finish_study_run, also after Ctrl-C or SIGTERM)
    and, at most every HEARTBEAT_SECONDS, while its trials report (StudyProgress): a driver that
    is SIGKILLed (or whose machine is lost) still leaves its time up to its last heartbeat, which
    the next `resume` adds in.
    """

    def __init__(self, tracking_uri: str, run_id: str, index: int, previous_seconds: float, started: float):
        self.client = MlflowClient(tracking_uri)
        self.run_id, self.index, self.previous_seconds, self.started = run_id, index, previous_seconds, started
        self._last_heartbeat = 0.0
        self._thread: threading.Thread | None = None

    def elapsed(self) -> float:
        return time.time() - self.started

    def metrics(self, seconds: float, timestamp: int):
        from mlflow.entities import Metric

        return [Metric(STUDY_SESSION_SECONDS, seconds, timestamp, self.index),
                Metric(STUDY_WALL_SECONDS, self.previous_seconds + seconds, timestamp, self.index),
                Metric(STUDY_SESSIONS, float(self.index + 1), timestamp, self.index)]

    def heartbeat(self, force: bool = False, wait: bool = False) -> None:
        """Record the session's seconds so far: at most every HEARTBEAT_SECONDS unless forced.

        Best effort, in a background thread unless `wait` (a tracking server that is away must not
        hold up the driver's Tune loop; MLflow's HTTP layer alone retries for minutes): one at a
        time, never retried beyond that, never raised. Each point carries the time it was taken,
        so a late one never wins over a newer one (the final record, finish_study_run).
        """
        now = time.time()
        if not force and now - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        if self._thread is not None and self._thread.is_alive():
            return  # the previous one is still on its way
        self._last_heartbeat = now
        metrics = self.metrics(now - self.started, int(now * 1000))

        def send() -> None:
            try:
                self.client.log_batch(self.run_id, metrics=metrics)
            except Exception:  # noqa: BLE001 - the final record (finish_study_run) is the one retried
                pass

        if wait:
            send()
            return
        self._thread = threading.Thread(target=send, name="xstilts-study-heartbeat", daemon=True)
        self._thread.start()


def begin_study_session(tracking_uri: str, run_id: str, started: float | None = None) -> StudySession:
    """A new session of the study whose parent run is `run_id`: index and previous seconds from
    the run's session history (a study run before sessions were recorded: its one wall time)."""
    client = MlflowClient(tracking_uri)
    sessions = _latest_per_step(call_with_retry(client.get_metric_history, run_id, STUDY_SESSION_SECONDS,
                                                what="reading the study's wall time"))
    if not sessions:
        walls = _latest_per_step(call_with_retry(client.get_metric_history, run_id, STUDY_WALL_SECONDS,
                                                 what="reading the study's wall time"))
        if walls:  # recorded as one number before sessions were: that is session 0
            sessions = {0: walls[max(walls)]}
            call_with_retry(client.log_metric, run_id, STUDY_SESSION_SECONDS, sessions[0], step=0,
                            what="recording the study's first session")
    index = max(sessions) + 1 if sessions else 0
    session = StudySession(tracking_uri, run_id, index, float(sum(sessions.values())),
                           time.time() if started is None else started)
    session.heartbeat(force=True, wait=True)  # the session is on record from its start
    _ACTIVE_SESSIONS[run_id] = session
    return session


def finish_study_run(tracking_uri: str, run_id: str, status: str, wall_seconds: float,
                     session: StudySession | None = None) -> None:
    """The parent run's last records; retried, since losing them would leave the study RUNNING.

    With `session`, the study's wall time is this session's `wall_seconds` plus the sessions
    before it (a resumed study sums its sessions); without, `wall_seconds` alone.
    """
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri)
    now = int(time.time() * 1000)  # fixed before the first attempt: a repeat is the same point
    metrics = session.metrics(wall_seconds, now) if session is not None else \
        [Metric(STUDY_WALL_SECONDS, wall_seconds, now, 0)]
    if session is not None:
        _ACTIVE_SESSIONS.pop(run_id, None)  # no heartbeat after the final record
    call_with_retry(client.log_batch, run_id, metrics=metrics, what="logging the study's wall time")
    call_with_retry(client.set_terminated, run_id, status=status, what="closing the study's run")


def _trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str):
    return call_with_retry(find_trial_run, client, experiment_id, parent_run_id, trial_id,
                           what=f"finding the run of trial {trial_id}")


def _log(line: str) -> None:
    # Looked up at call time: Tune pickles its callbacks, and Ray may have replaced builtins.print.
    print(line, flush=True)


class StudyProgress(Callback):
    """Prints one line per trial event, and closes trial runs left open by a killed trial."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, target: str,
                 selection_metric: str, max_epochs: int, num_samples: int):
        self.client = MlflowClient(tracking_uri)
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.target, self.metric, self.max_epochs, self.num_samples = target, selection_metric, max_epochs, num_samples
        self.started: dict[str, float] = {}
        self.printed: dict[str, float] = {}
        self.done = 0

    def _name(self, trial) -> str:
        return f"[{self.target} trial {trial.trial_id}]"

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()
        c = trial.config
        lr2 = f" intermediate_lr={c['intermediate_lr']:.3g}" if c.get("intermediate_task") != "none" else ""
        _log(f"{self._name(trial)} started: intermediate={c.get('intermediate_task')}{lr2} target_lr={c.get('target_lr', 0):.3g}")

    def _heartbeat(self, force: bool = False) -> None:
        # The driver's current session of this study, looked up rather than held: a resumed study's
        # callbacks are unpickled from the Tune state of the session that created them.
        session = _ACTIVE_SESSIONS.get(self.parent_run_id)
        if session is not None:
            session.heartbeat(force)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._heartbeat()
        epoch = result.get(TIME_ATTR)
        if SELECTION_METRIC in result and epoch is not None and self.printed.get(trial.trial_id) != epoch:
            self.printed[trial.trial_id] = epoch  # the trial re-reports its last epoch at the end
            _log(f"{self._name(trial)} epoch {int(result[TIME_ATTR])}/{self.max_epochs}: "
                     f"English dev {self.metric} {result[SELECTION_METRIC]:.2f}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        self._heartbeat(force=True)
        last = trial.last_result or {}
        seconds = time.time() - self.started.get(trial.trial_id, time.time())
        epochs = int(last.get(TIME_ATTR, 0))
        stopped = epochs < self.max_epochs
        if stopped:
            self._close_stopped(trial)
            _log(f"{self._name(trial)} stopped early by the scheduler after {epochs} epochs ({seconds:.0f}s)"
                     f" [{self.done}/{self.num_samples}]")
        else:
            zero_shot = last.get(FINAL_ZERO_SHOT)
            extra = f", zero-shot mean {zero_shot:.2f}" if zero_shot is not None else ""
            _log(f"{self._name(trial)} finished: English dev {self.metric} {last.get(SELECTION_METRIC, float('nan')):.2f}"
                     f"{extra} ({seconds:.0f}s) [{self.done}/{self.num_samples}]")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self._heartbeat(force=True)
        message = (getattr(trial, "error_msg", None) or "see the trial's error file").strip().splitlines()
        summary = message[-1] if message else "unknown error"
        self._close_failed(trial, summary)
        _log(f"{self._name(trial)} FAILED: {summary} [{self.done}/{self.num_samples}]")

    def _close_stopped(self, trial) -> None:
        """ASHA ended the trial: its process was stopped before it could close its MLflow run."""
        try:
            run = _trial_run(self.client, self.experiment_id, self.parent_run_id, trial.trial_id)
            if run is None:
                return
            call_with_retry(self.client.set_tag, run.info.run_id, TAG_STOPPED_EARLY, "true", what="tagging a stopped trial")
            if run.info.status != "KILLED":
                call_with_retry(self.client.set_terminated, run.info.run_id, status="KILLED", what="closing a stopped trial")
        except Exception as error:  # noqa: BLE001 - raising here would end the whole study
            _log(f"{self._name(trial)} warning: could not close its MLflow run as KILLED ({_first_line(error)})")

    def _close_failed(self, trial, summary: str) -> None:
        """A trial that died without closing its run (killed process, lost node): FAILED + error."""
        try:
            run = _trial_run(self.client, self.experiment_id, self.parent_run_id, trial.trial_id)
            if run is None or run.info.status != "RUNNING":
                return  # the trial recorded its own failure (with its full error) or finished
            call_with_retry(self.client.set_tag, run.info.run_id, TAG_ERROR, summary[:4000], what="recording a trial's error")
            call_with_retry(self.client.set_terminated, run.info.run_id, status="FAILED", what="closing a failed trial")
        except Exception as error:  # noqa: BLE001 - raising here would end the whole study
            _log(f"{self._name(trial)} warning: could not record its failure in MLflow ({_first_line(error)})")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
