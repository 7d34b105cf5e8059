"""All MLflow access of xstilts below the writers' own vocabulary: retrying a call through an
outage (`retry`), where a sqlite store's file is and how runs are found (`runs`). Record names
themselves are `xstilts.tasks.record_schema`'s; the writers are `xstilts.study.study_run` (the
study's parent run, the progress callback) and `xstilts.trainables.trial_run` (a trial's run), the
reader is `xstilts.analysis.records`."""
from xstilts.mlflow_store.retry import RETRY_ENV, call_with_retry, is_transient
from xstilts.mlflow_store.runs import (RunRow, absolute_sqlite_uri, child_rows, find_study_run, find_trial_run, kind_rows,
                                       search_child_rows, sqlite_path, study_filter, study_row, study_rows, trial_filter)

__all__ = ["RETRY_ENV", "RunRow", "absolute_sqlite_uri", "call_with_retry", "child_rows", "find_study_run",
           "find_trial_run", "is_transient", "kind_rows", "search_child_rows", "sqlite_path", "study_filter", "study_row",
           "study_rows", "trial_filter"]
