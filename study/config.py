"""Study configs: YAML validated into frozen dataclasses at the edge.

Every problem is reported as one `ConfigError` line naming the field and the fix, before Ray
starts and before anything is written (no MLflow run, no folder).
"""
from __future__ import annotations

import dataclasses
import os
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xstilts.fields import FieldError, finite as _finite, is_number as _is_number, positive_int, short
from xstilts.search_spaces.dimensions import CATEGORY, DIMENSIONS, INTERMEDIATE, LAYER, LEARNING_RATE
from xstilts.tasks import NONE, TASKS, UnknownTaskError, get_task
from xstilts.tasks.kinds import KINDS
from xstilts.tasks.mixture import MixtureError, TaskMixture
from xstilts.tasks.modeling import TRAINABLE_KINDS
from xstilts.trainables.config import ResourceOptions, TrainingOptions
from xstilts.trainables.embedded_model import EMBEDDED_MODEL

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "search_spaces" / "embedded_default.yaml"


class ConfigError(FieldError):
    """One line: `config field '<field>': <problem>; <fix>` (field named from the config's top)."""

    def __init__(self, field_name: str, problem: str, fix: str = ""):
        super().__init__(field_name, problem, fix)
        self.args = (f"config field '{self.field_name}': {self.problem}" + (f"; {self.fix}" if self.fix else ""),)


# Limits of the input boundary: what a config file, a YAML document and a name may be.
MAX_CONFIG_BYTES = 1_000_000  # a study config is a few KB
MAX_DEPTH = 50  # nesting of mappings/lists (a study config nests 3 deep)
MAX_EXPANDED_NODES = 10_000  # YAML nodes after expanding aliases (a study config has ~200)
MAX_EXPANDED_CHARS = 1_000_000  # scalar characters after expanding aliases
MAX_NAME_LENGTH = 100  # a study name is a folder name, an MLflow tag and part of Tune's paths
NAME_TIMESTAMP = "-20260101-120000"  # what resolve() appends to a config's name
MAX_SEED = 2**32 - 1  # numpy / Optuna seeds
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")

def check_name(value: Any, where: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A study name: 1..max_length of A-Z a-z 0-9 . _ -, not `.`/`..`, not starting with `-`
    (it names folders, MLflow tags and filter strings, and is pasted into shell commands)."""
    fix = "use e.g. xnli-sweep-1 (letters, digits, '.', '_', '-')"
    if not isinstance(value, str) or not value:
        raise ConfigError(where, f"must be a non-empty name, got {short(value)}", fix)
    if len(value) > max_length:
        raise ConfigError(where, f"is {len(value)} characters long (at most {max_length})", "use a shorter name")
    if not _NAME_RE.fullmatch(value):
        raise ConfigError(where, f"{short(value)} has characters other than letters, digits, '-', '_', '.'", fix)
    if value in (".", "..") or value.startswith("-"):
        raise ConfigError(where, f"{short(value)} is not a usable name (it would be read as a path or an option)", fix)
    return value


# --------------------------------------------------------------------------------------------
# Reading YAML safely: bounded size, depth and alias expansion; 3e-4 is a number
# --------------------------------------------------------------------------------------------

# YAML 1.2 floats in exponent form that PyYAML's YAML 1.1 resolver leaves as strings (3e-4, 1E5, 2.5e3).
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_NUMBER_TEXT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH while composing (before Python's
    recursion limit is near) and reads exponent floats (3e-4) as floats."""

    def __init__(self, stream, field: str, what: str):
        super().__init__(stream)
        self._field, self._what, self._depth = field, what, 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(self._field, f"{self._what} nests deeper than {MAX_DEPTH} levels (line {mark.line + 1})",
                                  "a study config nests a few levels; flatten it")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def _check_expansion(root: yaml.Node, source: str, what: str) -> None:
    """What the document expands to once aliases are followed stays within MAX_EXPANDED_*,
    MAX_DEPTH, and has no alias inside its own anchor ("billion laughs" and cycles refused)."""
    fix = "write the values out instead of YAML anchors/aliases (&name / *name)"
    sizes: dict[int, tuple[int, int, int]] = {}  # id(node) -> (nodes, characters, depth)
    active: set[int] = set()

    def walk(node: yaml.Node, depth: int) -> tuple[int, int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(source, f"{what} has an alias inside its own anchor (a recursive structure)", fix)
        if depth > MAX_DEPTH:
            raise ConfigError(source, f"{what} nests deeper than {MAX_DEPTH} levels once aliases are expanded", fix)
        if isinstance(node, yaml.ScalarNode):
            result = (1, len(node.value), 1)
        else:
            active.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            nodes, chars, deepest = 1, 0, 0
            for child in children:
                n, c, d = walk(child, depth + 1)
                nodes, chars, deepest = nodes + n, chars + c, max(deepest, d)
                if nodes > MAX_EXPANDED_NODES or chars > MAX_EXPANDED_CHARS:
                    raise ConfigError(source, f"{what} expands to more than {MAX_EXPANDED_NODES} values or "
                                      f"{MAX_EXPANDED_CHARS} characters (YAML aliases)", fix)
            active.discard(key)
            result = (nodes, chars, deepest + 1)
        if result[2] > MAX_DEPTH:
            raise ConfigError(source, f"{what} nests deeper than {MAX_DEPTH} levels once aliases are expanded", fix)
        sizes[key] = result
        return result

    nodes, chars, _ = walk(root, 1)
    if nodes > MAX_EXPANDED_NODES or chars > MAX_EXPANDED_CHARS:
        raise ConfigError(source, f"{what} expands to more than {MAX_EXPANDED_NODES} values or "
                          f"{MAX_EXPANDED_CHARS} characters (YAML aliases)", fix)


def load_yaml_text(text: str, source: str = "config", field: str | None = None) -> Any:
    """Parse one YAML document with the limits of the input boundary (size, depth, alias expansion;
    exponent floats as numbers). Every problem is a one-line ConfigError naming `field` (default:
    `source`) and, in its text, `source` (e.g. the file)."""
    field = field or source
    what = short(source) if field != source else "the YAML"
    if not isinstance(text, str):
        raise ConfigError(field, f"{what} must be text, got {type(text).__name__}", "give a UTF-8 YAML file")
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(field, f"{what} is {len(text)} characters long (at most {MAX_CONFIG_BYTES})",
                          "a study config is a few KB; is this the right file?")
    loader = None
    try:
        loader = _ConfigLoader(text, field, what)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, field, what)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        if isinstance(error, yaml.reader.ReaderError):
            character = chr(error.character) if isinstance(error.character, int) else str(error.character)
            where = f" (character {short(character)} at position {error.position}: not text YAML can hold)"
        raise ConfigError(field, f"{what} is not valid YAML{where}", "fix the syntax") from None
    except RecursionError:
        raise ConfigError(field, f"{what} nests too deeply", "a study config nests a few levels; flatten it") from None
    except ValueError as error:  # e.g. an integer literal over Python's 4,300-digit limit
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(field, f"{what} has a value that cannot be read ({short(str(error))})",
                          "write numbers with at most a few digits") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_config_file(path: str | os.PathLike, where: str = "--config") -> str:
    """The text of a config file: a regular file of at most MAX_CONFIG_BYTES of UTF-8."""
    shown = short(str(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(where, f"file {shown} does not exist", "give the path of a study YAML") from None
    except (OSError, ValueError) as error:
        raise ConfigError(where, f"cannot read {shown}: {getattr(error, 'strerror', None) or error}",
                          "give the path of a readable study YAML") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(where, f"{shown} is a folder", "give the path of a study YAML file in it")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(where, f"{shown} is not a regular file (a device, pipe or socket)",
                          "give the path of a study YAML file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(where, f"{shown} is {info.st_size} bytes (at most {MAX_CONFIG_BYTES})",
                          "a study config is a few KB; is this the right file?")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(where, f"cannot read {shown}: {error.strerror or error}",
                          "give the path of a readable study YAML") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(where, f"{shown} is more than {MAX_CONFIG_BYTES} bytes", "is this the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(where, f"{shown} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line})",
                          "save it as UTF-8 YAML") from None
    return text[1:] if text.startswith("\ufeff") else text


@dataclass(frozen=True)
class ParamSpec:
    """One dimension of the search space: loguniform/uniform over [low, high] or a choice."""

    type: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()


RANK_METHODS = ("semb", "logme")  # xstilts.study.rank


@dataclass(frozen=True)
class SearchConfig:
    algorithm: str = "optuna"  # Optuna through ray.tune.search.optuna.OptunaSearch
    sampler: str = "tpe"  # "tpe", "random" or "grid" (every point once; num_samples is the grid's size)
    seed: int = 0
    # TPE: trials sampled at random before its model of good and bad points takes over (Optuna's
    # n_startup_trials; the fixed points below count among them).
    startup_trials: int = 4
    scheduler: str = "asha"  # "asha" or "fifo" (no early stopping)
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: int = 2
    # With seeds > 1: ASHA judges a configuration at a rung on the mean of the seeds that reached
    # it, first once this many have (0: all of them), then again as each later seed arrives. Judged
    # on its first seed, a configuration's later seeds do not train past a rung waiting for their
    # siblings (seeds run one after the other when there are fewer slots than seeds); the cost and
    # the selection it gives are measured in benchmarks/README.md (search_efficiency.py, "seeds").
    decide_on_seeds: int = 1
    # Start each target's search with the no-intermediate baseline (when `none` is a choice), so
    # every intermediate task is compared with it; the sampler takes over from there.
    baseline_first: bool = True
    # Then every other intermediate choice once (middle learning rates), so the intermediate x
    # target table has every cell as soon as num_samples >= the number of choices; the sampler
    # searches learning rates from there.
    each_intermediate_first: bool = False
    # Where each target's Optuna study is kept (open it with `optuna-dashboard URL`): "auto" (an
    # optuna.db beside the MLflow sqlite store, else under a local storage_path), "none" (in
    # memory only), or an RDB URL (sqlite:///..., postgresql://...; needed for object storage
    # with a tracking server).
    optuna_storage: str = "auto"
    # Rank the intermediate tasks per target before searching (xstilts rank) and search only the
    # best `keep` of them (plus `none`), in rank order first: {rank_with: semb|logme, keep: K}.
    # None: every intermediate task of the config, in its order.
    intermediates: dict | None = None
    # What Optuna is told of a trial ASHA stopped early: "pruned" (its last score, ranked below
    # trials that ran to the end, as Optuna's own pruners record them) or "complete" (OptunaSearch's
    # default: the early-epoch score as if final). benchmarks/search_efficiency.py compares them.
    tell_stopped_as: str = "pruned"

    def check(self) -> None:
        if self.intermediates is not None:
            chosen = self.intermediates
            if not isinstance(chosen, dict) or set(chosen) - {"rank_with", "keep"} or "rank_with" not in chosen:
                raise FieldError("intermediates", f"must be {{rank_with: semb|logme, keep: K}}, got {short(chosen)}",
                                 "e.g. intermediates: {rank_with: semb, keep: 3}")
            if chosen["rank_with"] not in RANK_METHODS:
                raise FieldError("intermediates.rank_with", f"unknown method {short(chosen['rank_with'])}",
                                 f"use one of: {', '.join(RANK_METHODS)}")
            positive_int(chosen.get("keep", 3), "intermediates.keep", "keep at least 1 intermediate task")
        if self.algorithm != "optuna":
            raise FieldError("algorithm", f"unknown algorithm {short(self.algorithm)}", "use optuna")
        if self.tell_stopped_as not in ("pruned", "complete"):
            raise FieldError("tell_stopped_as", f"must be pruned or complete, got {short(self.tell_stopped_as)}",
                             "use pruned (the default)")
        if self.sampler not in ("tpe", "random", "grid"):
            raise FieldError("sampler", f"unknown sampler {short(self.sampler)}", "use tpe, random or grid")
        if self.scheduler not in ("asha", "fifo"):
            raise FieldError("scheduler", f"unknown scheduler {short(self.scheduler)}", "use asha or fifo")
        positive_int(self.grace_period, "grace_period", "use 1 or more epochs")
        if not isinstance(self.decide_on_seeds, int) or isinstance(self.decide_on_seeds, bool) or self.decide_on_seeds < 0:
            raise FieldError("decide_on_seeds", f"must be an integer >= 0, got {short(self.decide_on_seeds)}",
                             "use 0 (all of a configuration's seeds) or e.g. 1")
        positive_int(self.startup_trials, "startup_trials", "use 1 or more trials (Optuna's default is 10, ours 4)")
        storage = self.optuna_storage
        if not isinstance(storage, str) or not (storage in ("auto", "none") or "://" in storage) or len(storage) > 1000:
            raise FieldError("optuna_storage", f"must be auto, none or an RDB URL, got {short(storage)}",
                             "e.g. search.optuna_storage: sqlite:////abs/path/optuna.db (or auto)")
        if self.reduction_factor < 2:
            raise FieldError("reduction_factor", f"must be >= 2, got {self.reduction_factor}", "use 2, 3 or 4")


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str = "sqlite:///xstilts_runs/mlflow.db"
    experiment: str = "xstilts"

    def check(self) -> None:
        if not isinstance(self.experiment, str) or not self.experiment.strip() \
                or not self.experiment.isprintable() or len(self.experiment) > 200:
            raise FieldError("experiment", f"must be a printable, non-empty name of at most 200 characters, "
                             f"got {short(self.experiment)}", "e.g. experiment: xstilts")
        if not self.tracking_uri.isprintable() or " " in self.tracking_uri:
            raise FieldError("tracking_uri", f"{short(self.tracking_uri)} has spaces or control characters",
                             "use sqlite:///path/mlflow.db or http://host:port")
        if self.tracking_uri.split(":", 1)[0] not in TRACKING_SCHEMES:
            raise FieldError("tracking_uri", f"unsupported URI {short(self.tracking_uri)}",
                             "use sqlite:///path/mlflow.db or http://host:port (MLflow 3 refuses plain ./mlruns)")


@dataclass(frozen=True)
class StudyConfig:
    name: str
    model: str
    target_tasks: tuple[str, ...]
    intermediate_tasks: tuple[str, ...]
    search_space: dict[str, ParamSpec]
    search: SearchConfig = field(default_factory=SearchConfig)
    num_samples: int = 3  # configurations (trials, with seeds: 1) per target task
    # Training seeds per configuration: each configuration the searcher proposes is trained this
    # many times (seeds seed, seed+1, ...; Tune's Repeater, which gives the searcher their mean),
    # so the report can put intervals on its differences. Trials per target = num_samples * seeds.
    seeds: int = 1
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
    # Named multi-task intermediates, usable in intermediate_tasks: {name: TaskMixture}, its tasks
    # as written ("mnli", "xnli@de").
    mixtures: dict[str, TaskMixture] = field(default_factory=dict)

    @property
    def uses_embedded_model(self) -> bool:
        return self.model == EMBEDDED_MODEL

    def intermediate_sources(self, name: str) -> tuple[str, ...]:
        """The "task@lang" training splits behind an intermediate_tasks entry (() for none)."""
        if name == NONE:
            return ()
        specs = self.mixtures[name].tasks if name in self.mixtures else (name,)
        return tuple(_full_source(spec) for spec in specs)

    def intermediate_mixture(self, name: str) -> TaskMixture | None:
        """What an intermediate_tasks entry trains on, its tasks resolved to full "task@lang"
        training splits (a single task: a one-source mixture; None for none)."""
        if name == NONE:
            return None
        written = self.mixtures.get(name) or TaskMixture((name,))
        return dataclasses.replace(written, tasks=self.intermediate_sources(name))

    def intermediate_catalog(self) -> dict[str, dict | None]:
        """What each intermediate choice trains on, as the trial config carries it (plain dicts)."""
        catalog = {}
        for name in self.intermediate_tasks:
            mixture = self.intermediate_mixture(name)
            catalog[name] = mixture.to_dict() if mixture else None
        return catalog

    @property
    def target_train_choices(self) -> tuple[str, ...]:
        spec = self.search_space.get("target_train")
        return tuple(spec.values) if spec else ("english",)


def _full_source(spec: str) -> str:
    from xstilts.tasks.mixture import parse_source, source_name

    task, language = parse_source(spec)
    return source_name(task, language or get_task(task).train_language)


SEARCH_PARAMS = {name: dimension.help for name, dimension in DIMENSIONS.items()}
TARGET_TRAIN = DIMENSIONS["target_train"].allowed
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "databricks")
PARAM_TYPES = ("loguniform", "uniform", "choice")


def _allows(annotation: Any, wanted: type) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_allows(a, wanted) for a in typing.get_args(annotation))
    return annotation is wanted


def as_number(value: Any) -> Any:
    """A number written as text (`"3e-4"`, which PyYAML's YAML 1.1 rules leave a string) as a float;
    anything else unchanged."""
    if isinstance(value, str) and len(value) <= 40 and _NUMBER_TEXT.match(value.strip()):
        return float(value.strip())
    return value


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return _is_number(value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    return True  # containers: checked where they are used


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _build(cls, raw: Any, prefix: str):
    """A flat dataclass from a mapping: unknown keys, wrong types and non-finite numbers are errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(prefix, f"must be a mapping, got {type(raw).__name__}", "write it as `key: value` lines")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{prefix}.{key}", "unknown key", f"use one of: {', '.join(sorted(known))}")
        if _allows(hints[key], float):
            value = as_number(value)
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{prefix}.{key}", f"must be {_type_name(hints[key])}, got {short(value)}",
                              f"give a {_type_name(hints[key])}")
        if _is_number(value) and not _finite(value):
            raise ConfigError(f"{prefix}.{key}", f"must be a finite number, got {short(value)}",
                              "give a number (not .nan or .inf)")
        values[key] = value
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix}.{missing[0]}", "is missing", f"add `{missing[0]}:`")
    return cls(**values)


def _param_spec(name: str, raw: Any) -> ParamSpec:
    where = f"search_space.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(where, f"must be a mapping, got {short(raw)}", "e.g. {type: loguniform, low: 1e-5, high: 1e-4}")
    if "values" in raw and not isinstance(raw["values"], list):
        raise ConfigError(f"{where}.values", f"must be a list, got {short(raw['values'])}", "e.g. values: [1e-5, 3e-5]")
    values = tuple(raw["values"]) if isinstance(raw.get("values"), list) else ()
    dimension = DIMENSIONS[name]
    if dimension.values == LEARNING_RATE:
        values = tuple(as_number(v) for v in values)
    spec = _build(ParamSpec, {**raw, **({"values": values} if "values" in raw else {})}, where)
    if spec.type not in PARAM_TYPES:
        raise ConfigError(f"{where}.type", f"unknown type {short(spec.type)}", f"use one of: {', '.join(PARAM_TYPES)}")
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
    if dimension.values == CATEGORY:
        if spec.type != "choice" or not spec.values or not all(v in dimension.allowed for v in spec.values) \
                or len(set(spec.values)) != len(spec.values):
            raise ConfigError(where, f"must be {{type: choice, values: [...]}} of {', '.join(dimension.allowed)}, got {short(raw)}",
                              f"e.g. {dimension.example()}")
        return spec
    if dimension.values == LAYER:
        if spec.type != "choice" or not all(isinstance(v, int) and not isinstance(v, bool) for v in spec.values):
            raise ConfigError(where, "must be {type: choice, values: [...]} of layer numbers (integers)",
                              f"e.g. {dimension.example()}")
        return spec
    for value in numbers:
        if not _finite(value) or value <= 0:
            raise ConfigError(where, f"learning rates must be finite numbers > 0, got {short(value)}", "use e.g. 1e-5")
    return spec


def _check_source(spec: Any, where: str, allowed_kinds: tuple[str, ...]) -> None:
    """A task name, or "task@lang" (that language's training split), of an allowed kind."""
    from xstilts.tasks.mixture import parse_source

    if not isinstance(spec, str) or not spec:
        raise ConfigError(where, f"entries must be task names, got {short(spec)}", "e.g. mnli or xnli@de")
    try:
        name, language = parse_source(spec)
        task = get_task(name)
    except (UnknownTaskError, ValueError) as error:
        raise ConfigError(where, str(error).splitlines()[0]) from None
    if task.kind not in allowed_kinds:
        raise ConfigError(where, f"task {short(name)} is of kind {short(task.kind)}, which cannot be used here",
                          f"use tasks of kind {', '.join(allowed_kinds)}")
    if language is not None and language not in task.languages and language != task.train_language:
        raise ConfigError(where, f"task {name} has no language {short(language)}",
                          f"use one of: {', '.join(task.languages)}")


def _task_list(raw: Any, where: str, allow_none: bool, allowed_kinds: tuple[str, ...],
               mixtures: dict | None = None, allow_language: bool = False) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(where, f"must be a non-empty list of task names, got {short(raw)}",
                          f"e.g. [{', '.join(list(TASKS)[:2])}]")
    for name in raw:
        if allow_none and name == NONE or mixtures and isinstance(name, str) and name in mixtures:
            continue
        if not allow_language and isinstance(name, str) and "@" in name:
            raise ConfigError(where, f"{short(name)}: a target task is trained in English and evaluated in every language",
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
            raise ConfigError(key, f"must be a non-empty string, got {short(raw[key])}", "give a string")
    name = check_name(raw["name"], "name", MAX_NAME_LENGTH - len(NAME_TIMESTAMP))

    targets = _task_list(raw["target_tasks"], "target_tasks", allow_none=False,
                         allowed_kinds=tuple(KINDS))  # retrieval targets too: no phase 3
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
    for dimension in DIMENSIONS.values():
        # Required where a trial it applies to can exist: phase 3 always can (retrieval targets
        # are checked with the rest of the values); phase 2 when an intermediate task is listed.
        if not dimension.required or dimension.name in space:
            continue
        if dimension.applies_to == INTERMEDIATE and all(t == NONE for t in intermediates):
            continue
        why = " (an intermediate task is listed)" if dimension.applies_to == INTERMEDIATE else ""
        raise ConfigError(f"search_space.{dimension.name}", f"is missing{why}", f"add e.g. {dimension.example()}")

    config = StudyConfig(
        name=name, model=raw["model"], target_tasks=targets, intermediate_tasks=intermediates,
        search_space=space,
        search=_build(SearchConfig, raw.get("search"), "search"),
        num_samples=raw.get("num_samples", 3), max_concurrent_trials=raw.get("max_concurrent_trials", 2),
        seeds=raw.get("seeds", 1),
        resources=_build(ResourceOptions, raw.get("resources"), "resources"),
        training=_build(TrainingOptions, raw.get("training"), "training"),
        mlflow=_build(MlflowConfig, raw.get("mlflow"), "mlflow"),
        storage_path=raw.get("storage_path", "xstilts_runs"), data_dir=raw.get("data_dir"),
        data_files=raw.get("data_files"),
        seed=raw.get("seed", 0), mixtures=mixtures,
    )
    _check_values(config)
    from xstilts.study.preflight import check_paths  # imports this module

    check_paths(config)
    return config


def _mixtures(raw: Any) -> dict[str, TaskMixture]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("mixtures", f"must be a mapping of name to mixture, got {type(raw).__name__}",
                          "e.g. mixtures: {nli_qa: {tasks: [mnli, squad]}}")
    mixtures = {}
    for name, body in raw.items():
        where = f"mixtures.{name}"
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
            raise ConfigError(where, "a mixture name must be letters, digits, '-', '_' or '.'", "rename it")
        if name == NONE or name in TASKS:
            raise ConfigError(where, f"{short(name)} is already a task name", "give the mixture another name")
        if not isinstance(body, dict):
            raise ConfigError(where, f"must be a mapping, got {short(body)}", "e.g. {tasks: [mnli, squad], sampling: proportional}")
        tasks = body.get("tasks")
        body = {**body, **{key: tuple(body[key]) for key in ("tasks", "weights") if isinstance(body.get(key), list)}}
        try:  # TaskMixture checks its own fields (one place for tasks, sampling, temperature, weights)
            mixture = _build(TaskMixture, body, where)
        except MixtureError as error:
            raise ConfigError(f"{where}.{error.field_name}", error.problem, error.fix) from None
        if len(mixture.tasks) < 2 and mixture.mlm_weight is None:  # one task + its own MLM weight is an arm too
            raise ConfigError(f"{where}.tasks", f"must list at least two tasks, got {short(tasks)}",
                              "e.g. [mnli, squad] or [xnli, xnli@de]; a single task goes in intermediate_tasks directly "
                              "(or give it an mlm_weight: the task + MLM auxiliary arm)")
        for spec in mixture.tasks:
            _check_source(spec, f"{where}.tasks", TRAINABLE_KINDS)
        if len({_full_source(spec) for spec in mixture.tasks}) != len(mixture.tasks):
            raise ConfigError(f"{where}.tasks", "lists a training split twice", "remove the duplicate")
        mixtures[name] = mixture
    return mixtures


def _positive_int(value: Any, where: str, fix: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(where, f"must be an integer >= 1, got {short(value)}", fix)


def _check_values(c: StudyConfig) -> None:
    """Every field's value, section by section (each dataclass checks its own fields), then what
    spans sections. Paths, files and servers are the preflight's (xstilts.study.preflight)."""
    _positive_int(c.num_samples, "num_samples", "run at least 1 trial per target task")
    _positive_int(c.seeds, "seeds", "use 1 (one training seed per configuration) or e.g. 3")
    if c.seeds > 100:
        raise ConfigError("seeds", f"must be at most 100, got {c.seeds}", "use e.g. 3 or 5")
    if c.search.sampler == "grid":
        for name, spec in c.search_space.items():
            if spec.type != "choice":
                raise ConfigError(f"search_space.{name}", f"is {spec.type}, and a grid needs every dimension as a choice",
                                  "give {type: choice, values: [...]} or use sampler tpe")
    _positive_int(c.max_concurrent_trials, "max_concurrent_trials", "use 1 or more")
    for where, seed in (("seed", c.seed), ("search.seed", c.search.seed)):
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise ConfigError(where, f"must be an integer in [0, {MAX_SEED}], got {short(seed)}", f"e.g. {where}: 0")
    for section, options in (("search", c.search), ("resources", c.resources), ("training", c.training),
                             ("mlflow", c.mlflow)):
        try:
            options.check()
        except FieldError as error:
            raise ConfigError(f"{section}.{error.field_name}", error.problem, error.fix) from None
    t = c.training
    mlm_arms = [name for name, m in c.mixtures.items() if m.mlm_weight]
    if (t.mlm_weight > 0 or mlm_arms) and t.mlm_corpus is None and not c.uses_embedded_model:
        why = "training.mlm_weight > 0" if t.mlm_weight > 0 else f"mixtures.{mlm_arms[0]}.mlm_weight > 0"
        raise ConfigError("training.mlm_corpus", f"is missing ({why})",
                          "give a text file of unlabeled multilingual sentences, one per line")
    if c.search.grace_period > t.target_epochs:
        raise ConfigError("search.grace_period", f"{c.search.grace_period} > training.target_epochs {t.target_epochs}",
                          "ASHA could never stop a trial; lower grace_period")
    for where, value in (("data_dir", c.data_dir), ("storage_path", c.storage_path), ("model", c.model)):
        if value is not None and (not isinstance(value, str) or not value.isprintable()):
            raise ConfigError(where, f"must be a path or name without control characters, got {short(value)}",
                              "give a plain string")
    if c.model.startswith("embedded:") and c.model != EMBEDDED_MODEL:
        raise ConfigError("model", f"{short(c.model)} is not an embedded model", f"use {EMBEDDED_MODEL}")


def load_config(path: str | os.PathLike | None = None) -> StudyConfig:
    if path is not None and not str(path).strip():
        raise ConfigError("--config", "is empty", "give the path of a study YAML, or leave --config out for the default")
    path = Path(path) if path is not None else DEFAULT_CONFIG
    text = read_config_file(path, "--config")
    return parse_config(load_yaml_text(text, str(path), "--config"), str(path))


def with_overrides(config: StudyConfig, **changes) -> StudyConfig:
    """The config with CLI overrides (`--name`, `--tracking-uri`, ...), validated again."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if "tracking_uri" in changes:
        changes["mlflow"] = dataclasses.replace(config.mlflow, tracking_uri=changes.pop("tracking_uri"))
    updated = dataclasses.replace(config, **changes)
    if "name" in changes:
        check_name(updated.name, "--name")
    _check_values(updated)
    from xstilts.study.preflight import check_paths

    check_paths(updated)
    return updated
