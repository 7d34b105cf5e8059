"""MLflow records of one trial: a nested run under the study's parent run, found again by tag.

The trial looks its run up by (parent run, Tune trial id) before creating one, so a trial that
is restarted (a study resumed after the driver died) keeps logging into the same run instead
of leaving a duplicate.

Every call goes through `call_with_retry` (xstilts.mlflow_store.retry): a tracking server that is
unreachable for a while delays the trial instead of failing it. Each call is safe to repeat:
the run is looked up before it is created, metrics carry a timestamp fixed before the first
attempt (the store keeps one row per (key, timestamp, step, value)), tags and params overwrite.
"""
from __future__ import annotations

import socket
import time

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from xstilts.tasks.record_schema import FINAL_EN_DEV, TAG_ATTEMPT, TAG_ERROR, TAG_KIND, TAG_PREVIOUS_ERROR, TAG_PARENT, TAG_STOPPED_EARLY, TAG_TRIAL_ID
from xstilts.mlflow_store import call_with_retry, find_trial_run
from xstilts.mlflow_store.runs import TRIAL_KIND

# Where the trial's own process ran (the Tune function trainable; its Ray Train workers may be
# on other nodes): what a multi-node study is debugged with.
TAG_RAY_NODE_ID = "xstilts.ray_node_id"
TAG_HOSTNAME = "xstilts.hostname"


def placement_tags() -> dict[str, str]:
    """The Ray node id and host name of this process ({} outside Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return {}
        return {TAG_RAY_NODE_ID: ray.get_runtime_context().get_node_id(), TAG_HOSTNAME: socket.gethostname()}
    except Exception:  # noqa: BLE001 - a debugging aid must never fail a trial
        return {}


class TrialRun:
    def __init__(self, client: MlflowClient, run_id: str, finished_metrics: dict | None = None):
        self.client, self.run_id = client, run_id
        # Set when the run was already FINISHED with its final metrics: the trial completed before
        # the study driver died, and Tune (which had not saved that yet) restarted it.
        self.finished_metrics = finished_metrics

    @classmethod
    def open(cls, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str,
             run_name: str, tags: dict[str, str]) -> "TrialRun":
        client = MlflowClient(tracking_uri)
        placement = placement_tags()

        def find_or_create() -> "TrialRun":
            # One unit for the retry: if a create_run reached the server but its answer was lost,
            # the next attempt finds that run by its tags instead of creating a second one.
            found = find_trial_run(client, experiment_id, parent_run_id, trial_id)
            if found is not None:
                run_id = found.info.run_id
                if found.info.status == "FINISHED" and FINAL_EN_DEV in found.data.metrics:
                    return cls(client, run_id, dict(found.data.metrics))
                client.update_run(run_id, status="RUNNING")
                retry = dict(placement)  # restarted, possibly on another node
                error = found.data.tags.get(TAG_ERROR)
                if error is not None:
                    # A retry of a failed trial (Tune's max_failures, or `resume` restarting
                    # errored trials): the old error stays readable, but the run is no longer
                    # marked as failed by it.
                    retry[TAG_PREVIOUS_ERROR] = error
                    retry[TAG_ATTEMPT] = str(int(found.data.tags.get(TAG_ATTEMPT, "1")) + 1)
                if retry:
                    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in retry.items()])
                if error is not None:
                    client.delete_tag(run_id, TAG_ERROR)
                return cls(client, run_id)
            all_tags = {**tags, **placement, TAG_PARENT: parent_run_id, TAG_TRIAL_ID: trial_id, TAG_KIND: TRIAL_KIND}
            return cls(client, client.create_run(experiment_id, tags=all_tags, run_name=run_name).info.run_id)

        return call_with_retry(find_or_create, what=f"opening the MLflow run of trial {trial_id}")

    def log_params(self, params: dict) -> None:
        def log_new() -> None:
            existing = self.client.get_run(self.run_id).data.params
            new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
            if new:
                self.client.log_batch(self.run_id, params=new)

        call_with_retry(log_new, what="logging trial params")

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)  # fixed before the first attempt: a repeat is the same point
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
        for start in range(0, len(items), 900):  # MLflow caps a batch at 1000 metrics
            call_with_retry(self.client.log_batch, self.run_id, metrics=items[start:start + 900],
                            what="logging trial metrics")

    def set_tags(self, tags: dict[str, str]) -> None:
        call_with_retry(self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()],
                        what="setting trial tags")

    def stopped_by_study(self) -> bool:
        """Whether the study already recorded this trial as stopped early by its scheduler."""
        try:
            run = call_with_retry(self.client.get_run, self.run_id, what="reading the trial's run")
        except Exception:  # noqa: BLE001 - only asked while handling the trial's own error
            return False
        return run.data.tags.get(TAG_STOPPED_EARLY) == "true"

    def finish(self, status: str = "FINISHED") -> None:
        call_with_retry(self.client.set_terminated, self.run_id, status=status, what="closing the trial's run")
