"""Study configs: YAML validated into frozen dataclasses at the edge.

Every problem is reported as one `ConfigError` line naming the field and the fix, before Ray
starts and before anything is written (no MLflow run, no folder).
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks import NONE, TASKS, UnknownTaskError, get_task
from tasks.modeling import TRAINABLE_KINDS
from trainables.config import ResourceOptions, TrainingOptions
from trainables.embedded_model import EMBEDDED_MODEL

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "search_spaces" / "embedded_default.yaml"


class ConfigError(ValueError):
    """One line: `<field>: <problem>; <fix>`."""

    def __init__(self, field_name: str, problem: str, fix: str = ""):
        self.field_name = field_name
        super().__init__(f"config field '{field_name}': {problem}" + (f"; {fix}" if fix else ""))


@dataclass(frozen=True)
class ParamSpec:
    """One dimension of the search space: loguniform/uniform over [low, high] or a choice."""

    type: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()


@dataclass(frozen=True)
class SearchConfig:
    algorithm: str = "optuna"  # Optuna through ray.tune.search.optuna.OptunaSearch
    sampler: str = "tpe"  # "tpe" or "random"
    seed: int = 0
    scheduler: str = "asha"  # "asha" or "fifo" (no early stopping)
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: int = 2
    # Start each target's search with the no-intermediate baseline (when `none` is a choice), so
    # every intermediate task is compared with it; the sampler takes over from there.
    baseline_first: bool = True
    # Then every other intermediate choice once (middle learning rates), so the intermediate x
    # target table has every cell as soon as num_samples >= the number of choices; the sampler
    # searches learning rates from there.
    each_intermediate_first: bool = False


@dataclass(frozen=True)
class MixtureConfig:
    """A named multi-task intermediate: its "task" / "task@lang" training splits and how steps
    are shared out among them (tasks.mixture: proportional, or temperature T)."""

    tasks: tuple[str, ...]
    sampling: str = "proportional"
    temperature: float = 1.0
    # One weight per task (> 0), multiplying its sampling weight: sets a ratio between sources of
    # equal size (e.g. [3, 1] for English : German 3 : 1). None: all 1.
    weights: tuple | None = None


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str = "sqlite:///xstilts_runs/mlflow.db"
    experiment: str = "xstilts"


@dataclass(frozen=True)
class StudyConfig:
    name: str
    model: str
    target_tasks: tuple[str, ...]
    intermediate_tasks: tuple[str, ...]
    search_space: dict[str, ParamSpec]
    search: SearchConfig = field(default_factory=SearchConfig)
    num_samples: int = 3  # trials per target task
    max_concurrent_trials: int = 2
    resources: ResourceOptions = field(default_factory=ResourceOptions)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    storage_path: str = "xstilts_runs"
    data_dir: str | None = None
    # Per-split file overrides, relative to data_dir or absolute ("<task>:<split>[:<lang>]": path),
    # e.g. {"xnli:train": "xnli/test-en.labeled.tsv"}: see docs/tasks.md.
    data_files: dict | None = None
    seed: int = 0
    # Named multi-task intermediates, usable in intermediate_tasks: {name: MixtureConfig}.
    mixtures: dict[str, MixtureConfig] = field(default_factory=dict)

    @property
    def uses_embedded_model(self) -> bool:
        return self.model == EMBEDDED_MODEL

    def intermediate_sources(self, name: str) -> tuple[str, ...]:
        """The "task@lang" training splits behind an intermediate_tasks entry (() for none)."""
        if name == NONE:
            return ()
        specs = self.mixtures[name].tasks if name in self.mixtures else (name,)
        return tuple(_full_source(spec) for spec in specs)

    def intermediate_catalog(self) -> dict[str, dict]:
        """What each intermediate choice trains on, as the trial config carries it."""
        catalog = {}
        for name in self.intermediate_tasks:
            mixture = self.mixtures.get(name)
            catalog[name] = {"sources": list(self.intermediate_sources(name)),
                             "sampling": mixture.sampling if mixture else "proportional",
                             "temperature": mixture.temperature if mixture else 1.0,
                             "weights": list(mixture.weights) if mixture and mixture.weights else None}
        return catalog

    @property
    def target_train_choices(self) -> tuple[str, ...]:
        spec = self.search_space.get("target_train")
        return tuple(spec.values) if spec else ("english",)


def _full_source(spec: str) -> str:
    from tasks.mixture import parse_source, source_name

    task, language = parse_source(spec)
    return source_name(task, language or get_task(task).train_language)


SEARCH_PARAMS = {
    "intermediate_lr": "learning rate of phase 2 (intermediate task)",
    "target_lr": "learning rate of phase 3 (target task)",
    "retrieval_layer": "hidden_states index pooled for retrieval targets (0 = embeddings; XTREME: 14 of 24)",
    "target_train": "how phase 3 trains: english (zero-shot) or translate_train (every target language's train split)",
}
TARGET_TRAIN = ("english", "translate_train")
RETRIEVAL = "retrieval"  # target-only kind: no phase 3, the phase-2 encoder is evaluated directly
PARAM_TYPES = ("loguniform", "uniform", "choice")


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _build(cls, raw: Any, prefix: str):
    """A flat dataclass from a mapping: unknown keys and wrong types are errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(prefix, f"must be a mapping, got {type(raw).__name__}", "write it as `key: value` lines")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{prefix}.{key}", "unknown key", f"use one of: {', '.join(sorted(known))}")
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{prefix}.{key}", f"must be {_type_name(hints[key])}, got {value!r}",
                              f"give a {_type_name(hints[key])}")
    return cls(**raw)


def _param_spec(name: str, raw: Any) -> ParamSpec:
    where = f"search_space.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(where, f"must be a mapping, got {raw!r}", "e.g. {type: loguniform, low: 1e-5, high: 1e-4}")
    spec = _build(ParamSpec, {**raw, **({"values": tuple(raw["values"])} if isinstance(raw.get("values"), list) else {})}, where)
    if spec.type not in PARAM_TYPES:
        raise ConfigError(f"{where}.type", f"unknown type {spec.type!r}", f"use one of: {', '.join(PARAM_TYPES)}")
    if spec.type == "choice":
        if not spec.values:
            raise ConfigError(f"{where}.values", "is empty", "list at least one learning rate")
        numbers = list(spec.values)
    else:
        if spec.low is None or spec.high is None:
            raise ConfigError(where, f"type {spec.type} needs low and high", "add `low:` and `high:`")
        if spec.low > spec.high:
            raise ConfigError(f"{where}.low", f"low {spec.low:g} > high {spec.high:g}", "swap them")
        numbers = [spec.low, spec.high]
    if name == "target_train":
        if spec.type != "choice" or not spec.values or not all(v in TARGET_TRAIN for v in spec.values) \
                or len(set(spec.values)) != len(spec.values):
            raise ConfigError(where, f"must be {{type: choice, values: [...]}} of {', '.join(TARGET_TRAIN)}, got {raw!r}",
                              "e.g. {type: choice, values: [english, translate_train]}")
        return spec
    if name == "retrieval_layer":
        if spec.type != "choice" or not all(isinstance(v, int) and not isinstance(v, bool) for v in spec.values):
            raise ConfigError(where, "must be {type: choice, values: [...]} of layer numbers (integers)",
                              "e.g. {type: choice, values: [8, 14, 20]}")
        return spec
    for value in numbers:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise ConfigError(where, f"learning rates must be numbers > 0, got {value!r}", "use e.g. 1e-5")
    return spec


def _check_source(spec: Any, where: str, allowed_kinds: tuple[str, ...]) -> None:
    """A task name, or "task@lang" (that language's training split), of an allowed kind."""
    from tasks.mixture import parse_source

    if not isinstance(spec, str) or not spec:
        raise ConfigError(where, f"entries must be task names, got {spec!r}", "e.g. mnli or xnli@de")
    try:
        name, language = parse_source(spec)
        task = get_task(name)
    except (UnknownTaskError, ValueError) as error:
        raise ConfigError(where, str(error).splitlines()[0]) from None
    if task.kind not in allowed_kinds:
        raise ConfigError(where, f"task {name!r} is of kind {task.kind!r}, which cannot be used here",
                          f"use tasks of kind {', '.join(allowed_kinds)}")
    if language is not None and language not in task.languages and language != task.train_language:
        raise ConfigError(where, f"task {name} has no language {language!r}",
                          f"use one of: {', '.join(task.languages)}")


def _task_list(raw: Any, where: str, allow_none: bool, allowed_kinds: tuple[str, ...],
               mixtures: dict | None = None, allow_language: bool = False) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(where, f"must be a non-empty list of task names, got {raw!r}",
                          f"e.g. [{', '.join(list(TASKS)[:2])}]")
    for name in raw:
        if allow_none and name == NONE or mixtures and name in mixtures:
            continue
        if not allow_language and isinstance(name, str) and "@" in name:
            raise ConfigError(where, f"{name!r}: a target task is trained in English and evaluated in every language",
                              "name the task alone (for target-language training use search_space.target_train)")
        _check_source(name, where, allowed_kinds)
    if len(set(raw)) != len(raw):
        raise ConfigError(where, "lists a task twice", "remove the duplicate")
    return tuple(raw)


def parse_config(raw: Any, source: str = "config") -> StudyConfig:
    if not isinstance(raw, dict):
        raise ConfigError("<top>", f"{source} must be a YAML mapping", "see search_spaces/embedded_default.yaml")
    known = {f.name for f in dataclasses.fields(StudyConfig)}
    for key in raw:
        if key not in known:
            raise ConfigError(key, "unknown key", f"use one of: {', '.join(sorted(known))}")
    for required in ("name", "model", "target_tasks", "intermediate_tasks", "search_space"):
        if required not in raw:
            raise ConfigError(required, "is missing", "add it (see search_spaces/embedded_default.yaml)")
    for key in ("name", "model", "storage_path"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise ConfigError(key, f"must be a non-empty string, got {raw[key]!r}", "give a string")
    name = raw["name"]
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError("name", f"{name!r} has characters other than letters, digits, '-', '_', '.'",
                          "use e.g. xnli-sweep-1")

    targets = _task_list(raw["target_tasks"], "target_tasks", allow_none=False,
                         allowed_kinds=TRAINABLE_KINDS + (RETRIEVAL,))
    mixtures = _mixtures(raw.get("mixtures"))
    intermediates = _task_list(raw["intermediate_tasks"], "intermediate_tasks", allow_none=True,
                               allowed_kinds=TRAINABLE_KINDS, mixtures=mixtures, allow_language=True)
    unused = [name for name in mixtures if name not in intermediates]
    if unused:
        raise ConfigError(f"mixtures.{unused[0]}", "is defined but not listed in intermediate_tasks",
                          f"add {unused[0]} to intermediate_tasks or remove the mixture")

    space_raw = raw["search_space"]
    if not isinstance(space_raw, dict) or not space_raw:
        raise ConfigError("search_space", "is empty", "give at least target_lr (and intermediate_lr)")
    for key in space_raw:
        if key not in SEARCH_PARAMS:
            raise ConfigError(f"search_space.{key}", "unknown parameter",
                              f"use one of: {', '.join(SEARCH_PARAMS)} (the intermediate task is searched over intermediate_tasks)")
    space = {key: _param_spec(key, value) for key, value in space_raw.items()}
    if "target_lr" not in space:
        raise ConfigError("search_space.target_lr", "is missing", "add e.g. {type: loguniform, low: 5e-6, high: 3e-5}")
    if any(t != NONE for t in intermediates) and "intermediate_lr" not in space:
        raise ConfigError("search_space.intermediate_lr", "is missing (an intermediate task is listed)",
                          "add e.g. {type: choice, values: [1e-5, 3e-5]}")

    config = StudyConfig(
        name=name, model=raw["model"], target_tasks=targets, intermediate_tasks=intermediates,
        search_space=space,
        search=_build(SearchConfig, raw.get("search"), "search"),
        num_samples=raw.get("num_samples", 3), max_concurrent_trials=raw.get("max_concurrent_trials", 2),
        resources=_build(ResourceOptions, raw.get("resources"), "resources"),
        training=_build(TrainingOptions, raw.get("training"), "training"),
        mlflow=_build(MlflowConfig, raw.get("mlflow"), "mlflow"),
        storage_path=raw.get("storage_path", "xstilts_runs"), data_dir=raw.get("data_dir"),
        data_files=raw.get("data_files"),
        seed=raw.get("seed", 0), mixtures=mixtures,
    )
    _check_values(config)
    return config


def _mixtures(raw: Any) -> dict[str, MixtureConfig]:
    from tasks.mixture import SAMPLING_MODES

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("mixtures", f"must be a mapping of name to mixture, got {type(raw).__name__}",
                          "e.g. mixtures: {nli_qa: {tasks: [mnli, squad]}}")
    mixtures = {}
    for name, body in raw.items():
        where = f"mixtures.{name}"
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(where, "a mixture name must be letters, digits, '-', '_' or '.'", "rename it")
        if name == NONE or name in TASKS:
            raise ConfigError(where, f"{name!r} is already a task name", "give the mixture another name")
        if not isinstance(body, dict):
            raise ConfigError(where, f"must be a mapping, got {body!r}", "e.g. {tasks: [mnli, squad], sampling: proportional}")
        tasks = body.get("tasks")
        if isinstance(tasks, list):
            body = {**body, "tasks": tuple(tasks)}
        if isinstance(body.get("weights"), list):
            body = {**body, "weights": tuple(body["weights"])}
        mixture = _build(MixtureConfig, body, where)
        if not isinstance(mixture.tasks, tuple) or len(mixture.tasks) < 2:
            raise ConfigError(f"{where}.tasks", f"must list at least two tasks, got {tasks!r}",
                              "e.g. [mnli, squad] or [xnli, xnli@de]; a single task goes in intermediate_tasks directly")
        for spec in mixture.tasks:
            _check_source(spec, f"{where}.tasks", TRAINABLE_KINDS)
        if len({_full_source(spec) for spec in mixture.tasks}) != len(mixture.tasks):
            raise ConfigError(f"{where}.tasks", "lists a training split twice", "remove the duplicate")
        if mixture.weights is not None and (
                not isinstance(mixture.weights, tuple) or len(mixture.weights) != len(mixture.tasks)
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
                           for w in mixture.weights)):
            raise ConfigError(f"{where}.weights", f"must be one number > 0 per task ({len(mixture.tasks)}), "
                              f"got {body.get('weights')!r}", "e.g. weights: [3, 1]")
        if mixture.sampling not in SAMPLING_MODES:
            raise ConfigError(f"{where}.sampling", f"unknown sampling {mixture.sampling!r}",
                              f"use one of: {', '.join(SAMPLING_MODES)}")
        if not math.isfinite(mixture.temperature) or mixture.temperature <= 0:
            raise ConfigError(f"{where}.temperature", f"must be a number > 0, got {mixture.temperature!r}",
                              "e.g. 2.0 (1.0 = proportional)")
        mixtures[name] = mixture
    return mixtures


def _positive_int(value: Any, where: str, fix: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(where, f"must be an integer >= 1, got {value!r}", fix)


def _check_values(c: StudyConfig) -> None:
    _positive_int(c.num_samples, "num_samples", "run at least 1 trial per target task")
    _positive_int(c.max_concurrent_trials, "max_concurrent_trials", "use 1 or more")
    if not isinstance(c.seed, int) or isinstance(c.seed, bool):
        raise ConfigError("seed", f"must be an integer, got {c.seed!r}", "e.g. seed: 0")
    if c.search.algorithm != "optuna":
        raise ConfigError("search.algorithm", f"unknown algorithm {c.search.algorithm!r}", "use optuna")
    if c.search.sampler not in ("tpe", "random"):
        raise ConfigError("search.sampler", f"unknown sampler {c.search.sampler!r}", "use tpe or random")
    if c.search.scheduler not in ("asha", "fifo"):
        raise ConfigError("search.scheduler", f"unknown scheduler {c.search.scheduler!r}", "use asha or fifo")
    _positive_int(c.search.grace_period, "search.grace_period", "use 1 or more epochs")
    if c.search.reduction_factor < 2:
        raise ConfigError("search.reduction_factor", f"must be >= 2, got {c.search.reduction_factor}", "use 2, 3 or 4")
    _positive_int(c.resources.num_workers, "resources.num_workers", "use 1 or more Ray Train workers")
    if c.resources.cpus_per_worker <= 0:
        raise ConfigError("resources.cpus_per_worker", f"must be > 0, got {c.resources.cpus_per_worker}", "use e.g. 1")
    if c.resources.max_failures < 0:
        raise ConfigError("resources.max_failures", "must be >= 0", "use e.g. 2")
    t = c.training
    for name in ("batch_size", "gradient_accumulation_steps", "intermediate_epochs", "target_epochs", "eval_batch_size"):
        _positive_int(getattr(t, name), f"training.{name}", "use 1 or more")
    for name in ("max_length", "max_train_examples", "intermediate_max_train_examples", "max_eval_examples"):
        if getattr(t, name) is not None:
            _positive_int(getattr(t, name), f"training.{name}", "use 1 or more, or null for no limit")
    for field_name, example in (("max_train_examples_by_task", "{pawsx: 1800}"),
                                ("max_eval_examples_by_task", "{bucc2018: 2000}")):
        caps = getattr(t, field_name)
        if caps is None:
            continue
        if not isinstance(caps, dict):
            raise ConfigError(f"training.{field_name}", f"must be a mapping, got {caps!r}", f"e.g. {example}")
        for name, cap in caps.items():
            where = f"training.{field_name}.{name}"
            if name not in TASKS:
                raise ConfigError(where, "is not a known task", f"use a task name, one of: {', '.join(sorted(TASKS))}")
            _positive_int(cap, where, "use 1 or more, or remove the task for the study-wide cap")
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError("training.warmup_ratio", f"must be in [0, 1), got {t.warmup_ratio}", "the paper uses 0.1")
    if t.weight_decay < 0 or t.max_grad_norm <= 0:
        raise ConfigError("training.weight_decay" if t.weight_decay < 0 else "training.max_grad_norm",
                          "is out of range", "use weight_decay >= 0 and max_grad_norm > 0")
    if t.mlm_weight < 0 or not math.isfinite(t.mlm_weight):
        raise ConfigError("training.mlm_weight", f"must be >= 0, got {t.mlm_weight}", "use 0 (off) or e.g. 0.5")
    if t.mlm_weight > 0:
        if t.mlm_corpus is None and not c.uses_embedded_model:
            raise ConfigError("training.mlm_corpus", "is missing (training.mlm_weight > 0)",
                              "give a text file of unlabeled multilingual sentences, one per line")
        if t.mlm_corpus not in (None, "synthetic") and not os.path.isfile(t.mlm_corpus):
            raise ConfigError("training.mlm_corpus", f"file {t.mlm_corpus!r} does not exist",
                              "give a text file with one sentence per line, or set mlm_weight: 0")
    if not 0 < t.mlm_probability < 1:
        raise ConfigError("training.mlm_probability", f"must be in (0, 1), got {t.mlm_probability}", "BERT uses 0.15")
    if t.early_stopping_patience is not None:
        _positive_int(t.early_stopping_patience, "training.early_stopping_patience", "use 1 or more epochs, or null")
    if not 0 < t.holdout_fraction < 1:
        raise ConfigError("training.holdout_fraction", f"must be in (0, 1), got {t.holdout_fraction}", "use e.g. 0.1")
    if c.search.grace_period > t.target_epochs:
        raise ConfigError("search.grace_period", f"{c.search.grace_period} > training.target_epochs {t.target_epochs}",
                          "ASHA could never stop a trial; lower grace_period")
    scheme = c.mlflow.tracking_uri.split(":", 1)[0]
    if scheme not in ("sqlite", "http", "https", "postgresql", "mysql", "databricks"):
        raise ConfigError("mlflow.tracking_uri", f"unsupported URI {c.mlflow.tracking_uri!r}",
                          "use sqlite:///path/mlflow.db or http://host:port (MLflow 3 refuses plain ./mlruns)")
    if c.data_dir is not None and not os.path.isdir(c.data_dir):
        raise ConfigError("data_dir", f"folder {c.data_dir!r} does not exist", "point it at a folder of task data or remove it")
    _check_data(c)
    if "://" not in c.storage_path:
        _check_writable(Path(c.storage_path), "storage_path")
    if scheme == "sqlite":
        _check_writable(Path(sqlite_path(c.mlflow.tracking_uri)).parent, "mlflow.tracking_uri")
    model = c.model
    if model != EMBEDDED_MODEL and (model.startswith((".", "/", "~")) or os.sep in model and os.path.exists(model.split(os.sep)[0])):
        if not os.path.isdir(os.path.expanduser(model)) or not os.path.exists(os.path.join(os.path.expanduser(model), "config.json")):
            raise ConfigError("model", f"local model folder {model!r} has no config.json",
                              f"give an HF folder (save_pretrained) or a hub name like xlm-roberta-large, or {EMBEDDED_MODEL}")


def _check_data(c: StudyConfig) -> None:
    """With local data, every file a trial will read must exist: found here, not mid-study."""
    from tasks.base import DataOptions, TaskDataError

    if c.data_files is not None and (not isinstance(c.data_files, dict)
                                     or not all(isinstance(k, str) and isinstance(v, str) for k, v in c.data_files.items())):
        raise ConfigError("data_files", "must map '<task>:<split>[:<lang>]' to a file path",
                          "e.g. data_files: {xnli:train: xnli/test-en.labeled.tsv}")
    try:
        options = DataOptions(c.data_dir, None, c.seed, c.data_files)
    except (TypeError, ValueError) as error:
        raise ConfigError("data_files", str(error).splitlines()[0], "see docs/tasks.md for the keys") from None
    if c.data_dir is None and not c.data_files:
        # Generated data or the HF hub: a task that is on neither (CCG is licensed; LAReQA and
        # Mewsli-X ship as files) would fail in every trial.
        for name in c.target_tasks + tuple(s for n in c.intermediate_tasks for s in c.intermediate_sources(n)):
            task = get_task(name.split("@")[0])
            if task.locate is not None and not task.hub:
                raise ConfigError("data_dir", f"task {task.name} is not on the HF hub and no local data is configured",
                                  f"set data_dir (or data_files) to your copy of {task.name}; see docs/tasks.md")
        return
    # (task, split, language, field): every file a trial must read. Training splits only: a task
    # without an English dev split validates on a subset held out of its training split.
    needed = [(*_split_of(source), "intermediate_tasks") for name in c.intermediate_tasks
              for source in c.intermediate_sources(name)]
    needed += [(name, "train", get_task(name).train_language, "target_tasks") for name in c.target_tasks
               if get_task(name).kind != RETRIEVAL]
    for name, split, language, _ in needed:
        task = get_task(name)
        if task.locate is None or task.has_data(split, language, options):
            continue
        try:
            task.locate(split, language, options)
            problem = "has no such file"
        except TaskDataError as error:
            problem = str(error).splitlines()[0]
        key = f"{name}:{split}" + (f":{language}" if language != task.train_language else "")
        raise ConfigError("data_dir" if c.data_dir else "data_files",
                          f"task {name} needs its {language} {split} split: {problem}",
                          f"add the file or map it with data_files: {{{key}: <path>}}")
    if "translate_train" in c.target_train_choices:
        for name in c.target_tasks:
            task = get_task(name)
            if task.kind == RETRIEVAL or task.locate is None:
                continue
            if not any(task.has_data("train", l, options) for l in task.languages if l != task.train_language):
                raise ConfigError("search_space.target_train",
                                  f"translate_train needs non-English training splits of {name}, and none was found",
                                  f"map them with data_files: {{{name}:train:<lang>: <path>}} or search english only")


def _split_of(source: str) -> tuple[str, str, str]:
    from tasks.mixture import parse_source

    name, language = parse_source(source)
    return name, "train", language or get_task(name).train_language


def sqlite_path(uri: str) -> str:
    return uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri[len("sqlite://"):]


def _check_writable(path: Path, where: str) -> None:
    """The nearest existing ancestor must be a writable folder (nothing is created here)."""
    probe = path.expanduser().absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(where, f"{str(path)!r} is not writable ({probe} is not a writable folder)",
                          "choose a folder you can write to")


def load_config(path: str | os.PathLike | None = None) -> StudyConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        raise ConfigError("--config", f"file {str(path)!r} does not exist", "give the path of a study YAML")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("--config", f"{path} is not valid YAML{where}", "fix the syntax") from None
    return parse_config(raw, str(path))


def with_overrides(config: StudyConfig, **changes) -> StudyConfig:
    """The config with CLI overrides (`--name`, `--tracking-uri`, ...), validated again."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if "tracking_uri" in changes:
        changes["mlflow"] = dataclasses.replace(config.mlflow, tracking_uri=changes.pop("tracking_uri"))
    updated = dataclasses.replace(config, **changes)
    if "name" in changes and not all(c.isalnum() or c in "-_." for c in updated.name):
        raise ConfigError("--name", f"{updated.name!r} has characters other than letters, digits, '-', '_', '.'",
                          "use e.g. xnli-sweep-1")
    _check_values(updated)
    return updated
