"""The configuration of one trial and of one training phase: plain dataclasses, built from the
Tune config dict (the trainable is a plain function of its config)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from xstilts.fields import FieldError, finite, finite_number, int_in, positive_int, short
from xstilts.tasks import TASKS
from xstilts.tasks.base import DataOptions
from xstilts.tasks.mixture import TaskMixture


@dataclass(frozen=True)
class TrainingOptions:
    """Hyperparameters shared by phases 2 and 3 (the paper's recipe at small scale)."""

    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int | None = None  # None: the task's own max_length
    intermediate_epochs: int = 2
    target_epochs: int = 3
    max_train_examples: int | None = None
    # Phase 2's own cap (None: max_train_examples): intermediate tasks usually need more steps
    # than a capped target's, e.g. to move a head the pretrained encoder has never seen.
    intermediate_max_train_examples: int | None = None
    # Per-task caps on training splits, over the two above in both phases ({pawsx: 1800}): a task
    # that needs more examples than the study's uniform cap (adversarial PAWS-X) gets them alone.
    max_train_examples_by_task: dict[str, int] | None = None
    max_eval_examples: int | None = None
    # Per-task caps on evaluation splits, over max_eval_examples ({bucc2018: 2000}): a task whose
    # score needs more examples than the study's uniform cap (BUCC mining: ~3 % of its source
    # sentences have a gold pair) gets them alone. Evaluation only: it never changes what trains.
    max_eval_examples_by_task: dict[str, int] | None = None
    eval_batch_size: int = 128
    # Phase 2 only: weight of an auxiliary MLM loss on unlabeled multilingual text, added at every
    # step (the paper's MLM ablation); 0 turns it off. `mlm_corpus` is a UTF-8 text file, one
    # sentence per line, or "synthetic" (the embedded model's corpus of the 4 synthetic languages).
    mlm_weight: float = 0.0
    mlm_corpus: str | None = None
    mlm_probability: float = 0.15
    # Stop a phase when the English dev score has not improved for this many epochs, and go on
    # from the best epoch's weights (None: train every epoch, keep the last).
    early_stopping_patience: int | None = None
    # Freeze the word-embedding matrix (250k x hidden for XLM-R: most of the parameters and of
    # the optimizer's memory; on CPU most of the step time). Position/type embeddings still train.
    freeze_embeddings: bool = False
    # Intermediate tasks without an English dev split hold out this fraction of their training
    # examples (at most max_eval_examples) as the English validation subset.
    holdout_fraction: float = 0.1

    def check(self) -> None:
        """Each field's own range (FieldError naming it); files are the preflight's business."""
        for name in ("warmup_ratio", "weight_decay", "max_grad_norm", "mlm_weight", "mlm_probability", "holdout_fraction"):
            finite_number(getattr(self, name), name)
        for name in ("batch_size", "gradient_accumulation_steps", "intermediate_epochs", "target_epochs", "eval_batch_size"):
            positive_int(getattr(self, name), name, "use 1 or more")
        for name in ("max_length", "max_train_examples", "intermediate_max_train_examples", "max_eval_examples"):
            if getattr(self, name) is not None:
                positive_int(getattr(self, name), name, "use 1 or more, or null for no limit")
        for field_name, example in (("max_train_examples_by_task", "{pawsx: 1800}"),
                                    ("max_eval_examples_by_task", "{bucc2018: 2000}")):
            caps = getattr(self, field_name)
            if caps is None:
                continue
            if not isinstance(caps, dict):
                raise FieldError(field_name, f"must be a mapping, got {short(caps)}", f"e.g. {example}")
            for name, cap in caps.items():
                if name not in TASKS:
                    raise FieldError(f"{field_name}.{name}", "is not a known task",
                                     f"use a task name, one of: {', '.join(sorted(TASKS))}")
                positive_int(cap, f"{field_name}.{name}", "use 1 or more, or remove the task for the study-wide cap")
        if not 0 <= self.warmup_ratio < 1:
            raise FieldError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}", "the paper uses 0.1")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise FieldError("weight_decay" if self.weight_decay < 0 else "max_grad_norm",
                             "is out of range", "use weight_decay >= 0 and max_grad_norm > 0")
        if self.mlm_weight < 0:
            raise FieldError("mlm_weight", f"must be >= 0, got {self.mlm_weight}", "use 0 (off) or e.g. 0.5")
        if not 0 < self.mlm_probability < 1:
            raise FieldError("mlm_probability", f"must be in (0, 1), got {self.mlm_probability}", "BERT uses 0.15")
        if self.early_stopping_patience is not None:
            positive_int(self.early_stopping_patience, "early_stopping_patience", "use 1 or more epochs, or null")
        if not 0 < self.holdout_fraction < 1:
            raise FieldError("holdout_fraction", f"must be in (0, 1), got {self.holdout_fraction}", "use e.g. 0.1")

    def eval_cap(self, task: str) -> int | None:
        """How many examples of each of `task`'s evaluation splits (per language) are scored."""
        return (self.max_eval_examples_by_task or {}).get(task, self.max_eval_examples)


# The TrainingOptions fields that map a task name to its own cap.
PER_TASK_CAPS = ("max_train_examples_by_task", "max_eval_examples_by_task")


@dataclass(frozen=True)
class ResourceOptions:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    # Two kinds of retry (docs/cluster.md, "Retries"): Ray Train's restarts a phase's workers from
    # its last checkpoint after a worker dies; Ray Tune's restarts a whole trial whose function
    # raised (its phases then resume from their checkpoints and the phase cache). Tune's default
    # is 0: what is left after Train's retries is mostly a deterministic error.
    max_failures: int = 2  # Ray Train retries of a phase after a worker dies (resumes from checkpoint)
    trial_max_failures: int = 0  # Ray Tune retries of a trial that failed (after Train's retries)

    def check(self) -> None:
        positive_int(self.num_workers, "num_workers", "use 1 or more Ray Train workers")
        if not finite(self.cpus_per_worker) or self.cpus_per_worker <= 0:
            raise FieldError("cpus_per_worker", f"must be a finite number > 0, got {short(self.cpus_per_worker)}", "use e.g. 1")
        for name, example in (("max_failures", 2), ("trial_max_failures", 1)):
            int_in(getattr(self, name), 0, 100, name, f"use e.g. {example}")


@dataclass(frozen=True)
class PhaseConfig:
    """What a Ray Train worker needs to run one phase; serialisable as a dict."""

    phase: str  # "intermediate" or "target"
    task: str  # the task whose English dev selects and reports (a mixture: its first task)
    init_path: str  # HF name or folder to start from
    tokenizer_path: str
    learning_rate: float
    epochs: int
    seed: int
    training: TrainingOptions
    data_dir: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None  # the trial's nested run; rank 0 logs epoch metrics there
    feature_cache_dir: str | None = None  # tokenized splits shared across trials (xstilts.trainables.feature_cache)
    data_files: dict | None = None  # DataOptions.files: per-split file overrides ("<task>:<split>[:<lang>]")
    # What the phase trains on: full "task@lang" training splits (xstilts.tasks.mixture.parse_source)
    # mixed by the mixture's sampling; one head per distinct task on a shared encoder. None: the
    # English (train_language) split of `task` alone.
    mixture: TaskMixture | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        return self.mixture.tasks if self.mixture else (self.task,)

    @classmethod
    def for_trial(cls, trial: "TrialConfig", phase: str, task: str, init_path: str, learning_rate: float, epochs: int,
                  mixture: TaskMixture | None, mlflow_run_id: str | None) -> "PhaseConfig":
        """A phase of `trial`: what differs between phase 2 and 3 is given, the rest is the trial's."""
        return cls(phase=phase, task=task, init_path=init_path, tokenizer_path=trial.model_path,
                   learning_rate=learning_rate, epochs=epochs, seed=trial.seed, training=trial.training,
                   data_dir=trial.data_dir, mlflow_tracking_uri=trial.mlflow_tracking_uri, mlflow_run_id=mlflow_run_id,
                   feature_cache_dir=trial.feature_cache_dir, data_files=trial.data_files, mixture=mixture)

    def data_options(self, max_examples: int | None) -> DataOptions:
        return DataOptions(self.data_dir, max_examples, self.seed, self.data_files)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PhaseConfig":
        mixture = d.get("mixture")
        return cls(**{**d, "training": TrainingOptions(**d["training"]),
                      "mixture": TaskMixture.from_dict(mixture) if mixture else None})


CATALOG_KEY = "intermediate_catalog"  # {intermediate choice: what it trains on}, sent by the driver
SEED_INDEX_KEY = "__trial_index__"  # set by Tune's Repeater (the study's `seeds` option)


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space plus the study-wide settings a trial needs."""

    study_name: str
    target_task: str
    intermediate_task: str  # a task, "task@lang", a mixture name, or "none"
    intermediate_lr: float
    target_lr: float
    model_path: str
    seed: int
    storage_path: str
    phase_cache_dir: str
    mlflow_tracking_uri: str
    mlflow_experiment_id: str
    mlflow_parent_run_id: str
    training: TrainingOptions = field(default_factory=TrainingOptions)
    resources: ResourceOptions = field(default_factory=ResourceOptions)
    data_dir: str | None = None
    data_files: dict | None = None
    feature_cache_dir: str | None = None
    # Retrieval targets only: the hidden_states index to mean-pool (0 = embeddings; None: the
    # default of xstilts.tasks.retrieval.default_layer; negative: from the end).
    retrieval_layer: int | None = None
    # What phase 2 trains on behind `intermediate_task` (its full "task@lang" sources and their
    # sampling), resolved from the study's mixtures by the driver; None for "none".
    intermediate_mixture: TaskMixture | None = None
    # Phase 3: "english" (zero-shot) or "translate_train" (every target language with a train split).
    target_train: str = "english"
    # Which repeat of its configuration this trial is (the study's `seeds` option); `seed` already
    # includes it, so phase 2 and its cache key differ per seed.
    seed_index: int = 0

    @classmethod
    def from_tune_config(cls, config: dict) -> "TrialConfig":
        """Strict: a key that is neither a field nor the study's intermediate catalog is an error
        (a misspelt or newly searched dimension must not be dropped silently)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names - {CATALOG_KEY, SEED_INDEX_KEY})
        if unknown:
            raise ValueError(f"trial config has unknown key(s) {', '.join(unknown)}: a search dimension needs a "
                             f"TrialConfig field of the same name (search_spaces/dimensions.py)")
        values = dict(config)
        values.pop(CATALOG_KEY, None)
        # The study's `seeds` option: repeat k of a configuration trains with seed + k.
        values["seed_index"] = int(values.pop(SEED_INDEX_KEY, 0) or 0)
        values["seed"] = values["seed"] + values["seed_index"]
        values["mlflow_tracking_uri"] = trial_tracking_uri(values["mlflow_tracking_uri"])
        values["training"] = TrainingOptions(**config["training"])
        values["resources"] = ResourceOptions(**config["resources"])
        # The study sends what every intermediate choice trains on; keep the one this trial drew.
        entry = (config.get(CATALOG_KEY) or {}).get(values.get("intermediate_task"))
        if entry is not None:
            values["intermediate_mixture"] = entry
        if isinstance(values.get("intermediate_mixture"), dict):
            values["intermediate_mixture"] = TaskMixture.from_dict(values["intermediate_mixture"])
        return cls(**values)


# A tracking URI with a secret in it (`postgresql://alice:secret@db/mlflow`) reaches trials
# redacted in their Tune config (which Tune writes to params.json under the storage path) and
# whole in this environment variable, which the driver sets for every Ray worker.
TRACKING_URI_ENV = "XSTILTS_TRACKING_URI"


def trial_tracking_uri(configured: str) -> str:
    """The URI a trial connects with: the driver's real one where the config holds it redacted."""
    real = os.environ.get(TRACKING_URI_ENV)
    if real and isinstance(configured, str) and "***" in configured:
        return real
    return configured
