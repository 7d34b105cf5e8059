"""What analysis knows of a study: read back from MLflow only (never Ray's result files).

Runs are found and read through `xstilts.mlflow_store` (MLflow's paginated search, one page at a
time, so a study of many thousands of trials is streamed rather than loaded twice; from a sqlite
store, four plain queries that return the same rows ~10x faster).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from xstilts.mlflow_store import RunRow, child_rows, study_row, study_rows
from xstilts.mlflow_store.runs import TRIAL_KIND
from xstilts.tasks.record_schema import (EPOCH_EN_DEV, FINAL_DEV_PREFIX, FINAL_EN_DEV, TAG_CHECKPOINT, TAG_INTERMEDIATE, TAG_KIND,
                                 TAG_SELECTION_METRIC, TAG_STUDY, TAG_TARGET, TAG_TRIAL_ID)


class StudyNotFound(LookupError):
    pass


# EPOCH_EN_DEV (xstilts.tasks.record_schema), the per-epoch English dev selection metric, is the only
# score a trial stopped early by the scheduler has (its last value is what search_runs returns).


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
    metrics: dict[str, float] = field(default_factory=dict)  # the parent run's (study_wall_seconds)


def _no_experiment(tracking_uri: str, experiment: str) -> StudyNotFound:
    return StudyNotFound(f"no MLflow experiment {experiment!r} at {tracking_uri}; run `xstilts run` first or pass --tracking-uri/--experiment")


def _no_study(tracking_uri: str, experiment: str, name: str | None) -> StudyNotFound:
    what = f"study {name!r}" if name else "any study"
    return StudyNotFound(f"no {what} in experiment {experiment!r} at {tracking_uri}; `xstilts analyze --list` shows the studies there")


def find_study(tracking_uri: str, experiment: str, name: str | None = None) -> StudyRecord:
    """The study's parent run by name, or the most recent study of the experiment."""
    experiment_id, row = study_row(tracking_uri, experiment, name)
    if experiment_id is None:
        raise _no_experiment(tracking_uri, experiment)
    if row is None or TAG_STUDY not in row.tags:
        raise _no_study(tracking_uri, experiment, name)
    return StudyRecord(row.tags[TAG_STUDY], row.run_id, experiment_id, row.status, tracking_uri,
                       dict(row.params), dict(row.metrics))


def list_studies(tracking_uri: str, experiment: str) -> list[StudyRecord]:
    return [StudyRecord(row.tags[TAG_STUDY], row.run_id, row.experiment_id, row.status, tracking_uri)
            for row in study_rows(tracking_uri, experiment)]


def iter_trials(study: StudyRecord, page_size: int = 1000) -> Iterator[TrialRecord]:
    """The study's trial runs, streamed (xstilts.mlflow_store.child_rows: MLflow's paginated
    search, or plain queries on a sqlite store). Other runs nested under the study's run (their
    TAG_KIND says what they are, e.g. `xstilts align`'s) are not trials."""
    for row in child_rows(study.tracking_uri, study.experiment_id, study.run_id, page_size):
        if row.tags.get(TAG_KIND, TRIAL_KIND) == TRIAL_KIND:
            yield _record(row)


def _record(row: RunRow) -> TrialRecord:
    tags = row.tags
    return TrialRecord(
        run_id=row.run_id, trial_id=tags.get(TAG_TRIAL_ID, ""), status=row.status,
        target_task=tags.get(TAG_TARGET, ""), intermediate_task=tags.get(TAG_INTERMEDIATE, ""),
        selection_metric=tags.get(TAG_SELECTION_METRIC, ""), params=row.params,
        metrics=row.metrics, checkpoint=tags.get(TAG_CHECKPOINT), start_time=row.start_time, end_time=row.end_time,
    )
