"""Shipping the selected model: its checkpoint as a plain HF folder (`save_pretrained` layout)."""
from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile
from pathlib import Path

from xstilts.analysis.select import Selection
from xstilts.storage import StorageError, to_local

# What a trial checkpoint holds besides the HF model and tokenizer (resume state, not for users).
_NOT_EXPORTED = {"train_state.pt"}


class ExportError(RuntimeError):
    pass


def export_selection(selection: Selection, out_dir: str | os.PathLike) -> Path:
    """Copy the winning trial's checkpoint to `out_dir` (atomically: all or nothing)."""
    source = selection.best.checkpoint
    if not source:
        raise ExportError(f"trial {selection.best.trial_id} records no checkpoint")
    try:  # a checkpoint in an object store is read from this machine's temporary copy
        source_path = Path(to_local(source))
    except (StorageError, OSError) as error:
        raise ExportError(f"cannot read checkpoint {source} of trial {selection.best.trial_id}: {error}") from None
    if not (source_path / "config.json").exists():
        raise ExportError(f"checkpoint folder {source} of trial {selection.best.trial_id} is missing or incomplete (no config.json)")
    out = Path(out_dir).absolute()
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"--out {out} exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        for item in source_path.iterdir():
            if item.name in _NOT_EXPORTED:
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
        best = selection.best
        (staging / "xstilts_selection.json").write_text(json.dumps({
            "target_task": selection.target_task, "rule": selection.rule, "score": selection.score(),
            "selection_metric": best.selection_metric, "en_dev_score": best.en_dev_score,
            "trial_id": best.trial_id, "mlflow_run_id": best.run_id, "intermediate_task": best.intermediate_task,
            "params": best.params, "per_language": best.language_scores(), "source_checkpoint": source,
        }, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _optional_int(value: str | None) -> int | None:
    return None if value in (None, "None", "") else int(value)


def _eval_cap(params: dict, task: str) -> int | None:
    """The evaluation cap the trial used for `task`: its entry in training.max_eval_examples_by_task
    (MLflow holds the mapping as its Python repr) or else training.max_eval_examples."""
    by_task = params.get("training.max_eval_examples_by_task")
    if by_task not in (None, "None", ""):
        caps = ast.literal_eval(by_task)
        if task in caps:
            return int(caps[task])
    return _optional_int(params.get("training.max_eval_examples"))


def verify_export(out_dir: str | os.PathLike) -> float:
    """Re-score the exported folder on the task's English dev set, loading it the way users will
    (the same data options the trial used, read from its logged params)."""
    import transformers
    from transformers import AutoTokenizer

    from xstilts.tasks import DataOptions, get_task
    from xstilts.tasks.modeling import evaluate, head_class

    transformers.logging.set_verbosity_error()
    info = json.loads((Path(out_dir) / "xstilts_selection.json").read_text())
    task = get_task(info["target_task"])
    model = head_class(task).from_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    params = info["params"]
    data_dir = params.get("data_dir") if params.get("data_dir") not in (None, "None") else None
    options = DataOptions(data_dir, _eval_cap(params, task.name), int(params.get("seed", 0)))
    examples = task.load("dev", task.train_language, options)
    max_length = _optional_int(params.get("training.max_length"))
    return evaluate(task, model, tokenizer, examples, max_length=max_length)[task.metric]
