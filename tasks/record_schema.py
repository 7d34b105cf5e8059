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

# Trial params describing what phase 2 and phase 3 trained on (trainables.trial.intermediate_params).
PARAM_INTERMEDIATE_TASK = "intermediate_task"  # as written in the study: a task, "task@lang", a mixture, "none"
PARAM_INTERMEDIATE_SOURCES = "intermediate_sources"  # comma-joined "task@lang" training splits ("" for none)
PARAM_INTERMEDIATE_LANGUAGES = "intermediate_languages"  # comma-joined distinct languages, sorted
PARAM_INTERMEDIATE_NUM_LANGUAGES = "intermediate_num_languages"
PARAM_INTERMEDIATE_SAMPLING = "intermediate_sampling"  # mixtures only
PARAM_INTERMEDIATE_TEMPERATURE = "intermediate_temperature"  # mixtures only
PARAM_INTERMEDIATE_WEIGHTS = "intermediate_weights"  # mixtures with weights only, comma-joined
PARAM_TARGET_TRAIN = "target_train"  # "english" (zero-shot) or "translate_train"
