"""The preflight of a study config: what its fields point at on this machine (folders, files,
a local model, the data every trial will read) must exist and be writable where written. Run
after every field's value is checked (xstilts.study.config) and before anything starts; servers
(Ray, MLflow, object storage) are probed apart, with deadlines (xstilts.study.probes)."""
from __future__ import annotations

import os
from pathlib import Path

from xstilts.mlflow_store import sqlite_path
from xstilts.study.config import ConfigError, StudyConfig, short
from xstilts.tasks import get_task
from xstilts.tasks.kinds import kind_of
from xstilts.trainables.embedded_model import EMBEDDED_MODEL


def check_paths(c: StudyConfig) -> None:
    """ConfigError (one line naming the field and the fix) for the first thing missing here."""
    if c.data_dir is not None and not os.path.isdir(c.data_dir):
        raise ConfigError("data_dir", f"folder {short(c.data_dir)} does not exist", "point it at a folder of task data or remove it")
    _check_data(c)
    if "://" not in c.storage_path:
        check_writable(Path(c.storage_path), "storage_path")
    if c.mlflow.tracking_uri.startswith("sqlite:"):
        check_writable(Path(sqlite_path(c.mlflow.tracking_uri)).parent, "mlflow.tracking_uri")
    model = c.model
    if model != EMBEDDED_MODEL and (model.startswith((".", "/", "~")) or os.sep in model and os.path.exists(model.split(os.sep)[0])):
        if not os.path.isdir(os.path.expanduser(model)) or not os.path.exists(os.path.join(os.path.expanduser(model), "config.json")):
            raise ConfigError("model", f"local model folder {short(model)} has no config.json",
                              f"give an HF folder (save_pretrained) or a hub name like xlm-roberta-large, or {EMBEDDED_MODEL}")
    t = c.training
    uses_mlm = t.mlm_weight > 0 or any(m.mlm_weight for m in c.mixtures.values())  # the study's, or an arm's own
    if uses_mlm and t.mlm_corpus not in (None, "synthetic") and not os.path.isfile(t.mlm_corpus):
        raise ConfigError("training.mlm_corpus", f"file {short(t.mlm_corpus)} does not exist",
                          "give a text file with one sentence per line, or set mlm_weight: 0")


def _check_data(c: StudyConfig) -> None:
    """With local data, every file a trial will read must exist: found here, not mid-study."""
    from xstilts.tasks.base import DataOptions, TaskDataError

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
               if kind_of(get_task(name)).trainable]
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
    for arm in (a for a in ("translate_train", "per_language") if a in c.target_train_choices):
        # Every language the study scores must have its own (translated) training split: English
        # is never substituted, and a language trained without its data would read as translate-train.
        for name in c.target_tasks:
            task = get_task(name)
            if not kind_of(task).trainable or task.locate is None:
                continue
            for language in task.languages:
                if language == task.train_language or not task.has_data("dev", language, options) \
                        or task.has_data("train", language, options):
                    continue
                try:
                    task.locate("train", language, options)
                    problem = "has no translated training data"
                except TaskDataError as error:
                    problem = str(error).splitlines()[0]
                raise ConfigError("search_space.target_train",
                                  f"{arm}: target {name}, language {language}: {problem}",
                                  f"supply that file (data_files: {{{name}:train:{language}: <path>}}) or search english only")
            if not any(task.has_data("train", l, options) for l in task.languages if l != task.train_language):
                raise ConfigError("search_space.target_train",
                                  f"{arm} needs non-English training splits of {name}, and none was found",
                                  f"map them with data_files: {{{name}:train:<lang>: <path>}} or search english only")


def _split_of(source: str) -> tuple[str, str, str]:
    from xstilts.tasks.mixture import parse_source

    name, language = parse_source(source)
    return name, "train", language or get_task(name).train_language


def _read_only_mount(path: Path) -> bool:
    """On a read-only file system (os.access says yes to root even there)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_writable(path: Path, where: str) -> None:
    """(Also the CLI's --out checks.) The nearest existing ancestor must be a writable folder (nothing is created here)."""
    probe = path.expanduser().absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK) or _read_only_mount(probe):
        raise ConfigError(where, f"{short(str(path))} is not writable ({short(str(probe))} is not a writable folder)",
                          "choose a folder you can write to")


