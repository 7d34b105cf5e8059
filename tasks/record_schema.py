"""The names under which a trial is recorded in MLflow: the contract between the trainables that
write records and `analysis` that reads them (both import it; it imports nothing)."""

TAG_STUDY = "xstilts.study"
TAG_KIND = "xstilts.run_kind"  # "study" (the parent run) or "trial" (a nested run)
TAG_TRIAL_ID = "xstilts.trial_id"
TAG_TARGET = "xstilts.target_task"
TAG_INTERMEDIATE = "xstilts.intermediate_task"
TAG_CHECKPOINT = "xstilts.checkpoint"  # folder of the trial's final HF checkpoint
TAG_SELECTION_METRIC = "xstilts.selection_metric"  # the target's metric name, e.g. accuracy
TAG_ERROR = "xstilts.error"  # only while the run's latest attempt failed
TAG_ATTEMPT = "xstilts.attempt"  # set from the second attempt of a failed trial on (2, 3, ...)
TAG_PREVIOUS_ERROR = "xstilts.previous_error"  # the error that ended the attempt before
TAG_STOPPED_EARLY = "xstilts.stopped_early"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag

# Per-epoch metrics of phase 3 (phase 2 logs the same names under "intermediate/").
EPOCH_EN_DEV = "en_dev_score"  # the English dev selection metric, every epoch (Tune's and ASHA's metric)
TARGET_EPOCH = "target_epoch"  # phase 3's epoch counter (ASHA's time attribute; survives Train restarts)
INTERMEDIATE_PREFIX = "intermediate/"

FINAL_PREFIX = "final/"  # what a trial records once, after its last epoch
FINAL_EN_DEV = "final/en_dev_score"  # the selection metric after the last epoch
FINAL_ALL_LANGUAGES = "final/all_languages_mean"
FINAL_ZERO_SHOT = "final/zero_shot_mean"
FINAL_DEV_PREFIX = "final/dev/"  # final/dev/<lang>/<metric>
FINAL_CHANCE_PREFIX = "final/chance/"  # final/chance/<lang>/<metric>: majority-class baseline

# A trial's final per-example statistics ({"metric", "languages": {lang: [[numerator, denominator], ...]}}):
# the report's intervals over examples resample them.
EXAMPLE_STATS_ARTIFACT = "final_examples.json"

# Trial params describing what phase 2 and phase 3 trained on (xstilts.trainables.trial.intermediate_params).
PARAM_INTERMEDIATE_TASK = "intermediate_task"  # as written in the study: a task, "task@lang", a mixture, "none"
PARAM_INTERMEDIATE_SOURCES = "intermediate_sources"  # comma-joined "task@lang" training splits ("" for none)
PARAM_INTERMEDIATE_LANGUAGES = "intermediate_languages"  # comma-joined distinct languages, sorted
PARAM_INTERMEDIATE_NUM_LANGUAGES = "intermediate_num_languages"
PARAM_INTERMEDIATE_SAMPLING = "intermediate_sampling"  # mixtures only
PARAM_INTERMEDIATE_TEMPERATURE = "intermediate_temperature"  # mixtures only
PARAM_INTERMEDIATE_WEIGHTS = "intermediate_weights"  # mixtures with weights only, comma-joined
PARAM_INTERMEDIATE_MLM_WEIGHT = "intermediate_mlm_weight"  # an arm's own MLM auxiliary weight (mixtures.<name>.mlm_weight)
PARAM_TARGET_TRAIN = "target_train"  # "english" (zero-shot) or "translate_train"
# The searched dimensions, recorded as params under the names the search space gives them.
PARAM_TARGET_TASK = "target_task"
PARAM_INTERMEDIATE_LR = "intermediate_lr"  # 0.0 for `none`
PARAM_TARGET_LR = "target_lr"  # 0.0 for retrieval targets (no phase 3)
PARAM_RETRIEVAL_LAYER = "retrieval_layer"  # retrieval targets: the hidden_states index pooled
PARAM_SEED = "seed"  # the training seed (the study's seed + the repeat index)
PARAM_SEED_INDEX = "seed_index"  # which repeat of its configuration (the study's `seeds` option)

# Per-trial metrics of how it ran.
METRIC_PHASE_CACHE_HIT = "phase_cache_hit"  # 1.0 when phase 2 came from the phase cache

# The parent (study) run's metrics: wall time summed over driver sessions (a resumed study has
# several), each session's own seconds (step = session index) and the session count.
STUDY_WALL_SECONDS = "study_wall_seconds"
STUDY_SESSION_SECONDS = "study_session_seconds"
STUDY_SESSIONS = "study_sessions"

# `xstilts align` (xstilts.study.align): one run nested under the study's parent run (TAG_KIND =
# ALIGN_KIND; analysis reads trials as the parent's children of kind "trial" or untagged) with,
# per encoder and language, how that language's sentences align with their English parallels:
# metrics align/<encoder>/<language>/<score> (`align_metric`), <encoder> = ALIGN_BASE (the
# pretrained, phase-1 encoder) or a cached phase-2 encoder (`align_encoder`); <language> = a
# language code or ALIGN_MEAN (the mean over the languages). Every pair's values are in the
# run's artifact ALIGN_ARTIFACT, which the report reads for its bootstrap intervals.
ALIGN_KIND = "align"
ALIGN_PREFIX = "align/"
ALIGN_BASE = "none"
ALIGN_MEAN = "mean"
ALIGN_ACCURACY = "accuracy"  # English -> language top-1 retrieval accuracy, in percent
ALIGN_COSINE_GAP = "cosine_gap"  # mean cosine of parallel pairs minus mean cosine of non-parallel pairs
ALIGN_ARTIFACT = "alignment.json"
PARAM_ALIGN_TASK = "align_task"  # where the parallel sentences come from (a retrieval task)
PARAM_ALIGN_SPLIT = "align_split"
PARAM_ALIGN_LAYER = "align_layer"  # the hidden_states index mean-pooled
PARAM_ALIGN_MAX_PAIRS = "align_max_pairs"  # parallel pairs per language, at most
PARAM_ALIGN_ENCODERS = "align_encoders"  # comma-joined <encoder> names measured


def final_dev(language: str, metric: str) -> str:
    """The final score of one language: final/dev/<lang>/<metric>."""
    return f"{FINAL_DEV_PREFIX}{language}/{metric}"


def final_chance(language: str, metric: str) -> str:
    """The majority-class baseline of one language: final/chance/<lang>/<metric>."""
    return f"{FINAL_CHANCE_PREFIX}{language}/{metric}"


def summarize_final(scores: dict[str, float], train_language: str) -> dict[str, float]:
    """The final means from per-language scores of the selection metric ({language: score}):
    all languages, zero-shot (every language but the training one; absent when there is none)
    and the English dev score (the training language's; None-free only when it was scored).
    The one place these means are computed, for phase 3 and for retrieval targets alike."""
    summary = {FINAL_ALL_LANGUAGES: sum(scores.values()) / len(scores)}
    zero_shot = [value for language, value in scores.items() if language != train_language]
    if zero_shot:
        summary[FINAL_ZERO_SHOT] = sum(zero_shot) / len(zero_shot)
    if train_language in scores:
        summary[FINAL_EN_DEV] = scores[train_language]
    return summary


def align_encoder(intermediate: str, learning_rate: float | None = None, seed_index: int = 0) -> str:
    """The <encoder> segment of an `align_metric`: ALIGN_BASE for the phase-1 encoder (`none`),
    else `<intermediate>_lr<lr>` (and `_seed<k>` for repeat k > 0 of the study's `seeds`); a
    character MLflow refuses in a metric key (e.g. the "@" of task@lang) becomes "_"."""
    if intermediate == ALIGN_BASE:
        return ALIGN_BASE
    name = "".join(c if (c.isascii() and c.isalnum()) or c in "_.-" else "_" for c in intermediate)
    if learning_rate is not None:
        name += f"_lr{learning_rate:g}"
    return name + (f"_seed{seed_index}" if seed_index else "")


def align_metric(encoder: str, language: str, score: str) -> str:
    """align/<encoder>/<language>/<score>."""
    return f"{ALIGN_PREFIX}{encoder}/{language}/{score}"
