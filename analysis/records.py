"""What analysis knows of a study: read back from MLflow only (never Ray's result files).

Runs are read with MLflow's paginated search, one page at a time, so a study of many thousands
of trials is streamed rather than loaded twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from mlflow.tracking import MlflowClient

from tasks.record_schema import (FINAL_DEV_PREFIX, FINAL_EN_DEV, TAG_CHECKPOINT, TAG_INTERMEDIATE, TAG_KIND,
                                 TAG_PARENT, TAG_SELECTION_METRIC, TAG_STUDY, TAG_TARGET, TAG_TRIAL_ID)


class StudyNotFound(LookupError):
    pass


# The per-epoch English dev selection metric a trial reports while it trains (the last value is
# what search_runs returns): the only score a trial stopped early by the scheduler has.
EPOCH_EN_DEV = "en_dev_score"


@dataclass(frozen=True)
class TrialRecord:
    run_id: str
    trial_id: str
    status: str
    target_task: str
    intermediate_task: str
    selection_metric: str
    params: dict[str, str]
    metrics: dict[str, float]
    checkpoint: str | None
    start_time: int | None = None  # MLflow run start, ms since the epoch
    end_time: int | None = None

    @property
    def completed(self) -> bool:
        return self.status == "FINISHED" and FINAL_EN_DEV in self.metrics and bool(self.checkpoint)

    @property
    def en_dev_score(self) -> float | None:
        return self.metrics.get(FINAL_EN_DEV)

    @property
    def last_en_dev_score(self) -> float | None:
        """The final English dev score, or for a trial stopped early its last epoch's."""
        return self.metrics.get(FINAL_EN_DEV, self.metrics.get(EPOCH_EN_DEV))

    def language_scores(self) -> dict[str, float]:
        """Final dev score of the selection metric per language."""
        suffix = f"/{self.selection_metric}"
        return {k[len(FINAL_DEV_PREFIX):-len(suffix)]: v for k, v in self.metrics.items()
                if k.startswith(FINAL_DEV_PREFIX) and k.endswith(suffix)}


@dataclass(frozen=True)
class StudyRecord:
    name: str
    run_id: str
    experiment_id: str
    status: str
    tracking_uri: str
    params: dict[str, str] = field(default_factory=dict)


def find_study(tracking_uri: str, experiment: str, name: str | None = None) -> StudyRecord:
    """The study's parent run by name, or the most recent study of the experiment."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise StudyNotFound(f"no MLflow experiment {experiment!r} at {tracking_uri}; run `xstilts run` first or pass --tracking-uri/--experiment")
    query = f"tags.`{TAG_KIND}` = 'study'" + (f" and tags.`{TAG_STUDY}` = '{name}'" if name else "")
    runs = client.search_runs([found.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        what = f"study {name!r}" if name else "any study"
        raise StudyNotFound(f"no {what} in experiment {experiment!r} at {tracking_uri}; `xstilts analyze --list` shows the studies there")
    run = runs[0]
    return StudyRecord(run.data.tags[TAG_STUDY], run.info.run_id, found.experiment_id, run.info.status,
                       tracking_uri, dict(run.data.params))


def list_studies(tracking_uri: str, experiment: str) -> list[StudyRecord]:
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'study'",
                              order_by=["attributes.start_time DESC"])
    return [StudyRecord(r.data.tags[TAG_STUDY], r.info.run_id, found.experiment_id, r.info.status, tracking_uri)
            for r in runs]


def iter_trials(study: StudyRecord, page_size: int = 1000) -> Iterator[TrialRecord]:
    """The study's trial runs, one MLflow page at a time."""
    client = MlflowClient(study.tracking_uri)
    token = None
    while True:
        page = client.search_runs([study.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{study.run_id}'",
                                  max_results=page_size, page_token=token)
        for run in page:
            tags = run.data.tags
            yield TrialRecord(
                run_id=run.info.run_id, trial_id=tags.get(TAG_TRIAL_ID, ""), status=run.info.status,
                target_task=tags.get(TAG_TARGET, ""), intermediate_task=tags.get(TAG_INTERMEDIATE, ""),
                selection_metric=tags.get(TAG_SELECTION_METRIC, ""), params=dict(run.data.params),
                metrics=dict(run.data.metrics), checkpoint=tags.get(TAG_CHECKPOINT),
                start_time=run.info.start_time, end_time=run.info.end_time,
            )
        token = page.token
        if not token:
            return
