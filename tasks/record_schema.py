"""The names under which a trial is recorded in MLflow: the contract between the trainables that
write records and `analysis` that reads them (both import it; it imports nothing)."""

TAG_STUDY = "xstilts.study"
TAG_KIND = "xstilts.run_kind"  # "study" (the parent run) or "trial" (a nested run)
TAG_TRIAL_ID = "xstilts.trial_id"
TAG_TARGET = "xstilts.target_task"
TAG_INTERMEDIATE = "xstilts.intermediate_task"
TAG_CHECKPOINT = "xstilts.checkpoint"  # folder of the trial's final HF checkpoint
TAG_SELECTION_METRIC = "xstilts.selection_metric"  # the target's metric name, e.g. accuracy
TAG_ERROR = "xstilts.error"
TAG_STOPPED_EARLY = "xstilts.stopped_early"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag

FINAL_EN_DEV = "final/en_dev_score"  # the selection metric after the last epoch
FINAL_ALL_LANGUAGES = "final/all_languages_mean"
FINAL_ZERO_SHOT = "final/zero_shot_mean"
FINAL_DEV_PREFIX = "final/dev/"  # final/dev/<lang>/<metric>
FINAL_CHANCE_PREFIX = "final/chance/"  # final/chance/<lang>/<metric>: majority-class baseline
