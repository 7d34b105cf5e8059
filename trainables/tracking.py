"""MLflow records of one trial: a nested run under the study's parent run, found again by tag.

The trial looks its run up by (parent run, Tune trial id) before creating one, so a trial that
is restarted (a study resumed after the driver died) keeps logging into the same run instead
of leaving a duplicate.
"""
from __future__ import annotations

import time

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tasks.record_schema import FINAL_EN_DEV, TAG_KIND, TAG_PARENT, TAG_TRIAL_ID


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
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_TRIAL_ID}` = '{trial_id}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status == "FINISHED" and FINAL_EN_DEV in found[0].data.metrics:
                return cls(client, run_id, dict(found[0].data.metrics))
            client.update_run(run_id, status="RUNNING")
        else:
            all_tags = {**tags, TAG_PARENT: parent_run_id, TAG_TRIAL_ID: trial_id, TAG_KIND: "trial"}
            run_id = client.create_run(experiment_id, tags=all_tags, run_name=run_name).info.run_id
        return cls(client, run_id)

    def log_params(self, params: dict) -> None:
        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        if new:
            self.client.log_batch(self.run_id, params=new)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
        for start in range(0, len(items), 900):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(self.run_id, metrics=items[start:start + 900])

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
