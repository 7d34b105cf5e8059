"""The MLflow model registry side of `xstilts export`.

`register_export` logs an exported folder (the `save_pretrained` model + tokenizer +
xstilts_selection.json written by `xstilts.analysis.export.export_selection`) as an artifact of the
winning trial's run, under `xstilts_model/`, registers `runs:/<run_id>/xstilts_model` as a new
version of a registered model (default: named like the MLflow experiment, `xstilts`), and points
the target's alias at it: `<target>-best` for the English-dev selection, `<target>-best-oracle`
for the oracle rule. The selection rule, study, trial and metrics are the version's tags.

`fetch_registered` downloads the version an alias points at into a new folder: the same folder
that was exported, loadable with AutoModelFor...from_pretrained.

This works on any tracking store with a registry (the sqlite default, an MLflow server): MLflow 3
registers a `runs:/` source as is, with no MLmodel file or logged model needed.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from xstilts.analysis.select import Selection
from xstilts.tasks.record_schema import PARAM_INTERMEDIATE_LR, PARAM_TARGET_LR, FINAL_ALL_LANGUAGES, FINAL_EN_DEV, FINAL_ZERO_SHOT

MODEL_ARTIFACT_PATH = "xstilts_model"
SELECTION_FILE = "xstilts_selection.json"
TAG_PREFIX = "xstilts."


class RegistryError(RuntimeError):
    pass


def alias_for(target: str, rule: str = "en_dev") -> str:
    """`<target>-best` for the English-dev (honest) selection; `<target>-best-oracle` for the oracle."""
    return f"{target}-best" if rule == "en_dev" else f"{target}-best-oracle"


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


@dataclass(frozen=True)
class Registered:
    model: str
    version: str
    alias: str
    source: str
    reused: bool  # an existing version (same run, source and rule) got the alias


def version_tags(selection: Selection, study: str, verified_score: float | None) -> dict[str, str]:
    best = selection.best
    tags = {
        "study": study, "target_task": selection.target_task, "selection_rule": selection.rule,
        "selection_score": selection.score(), "selection_metric": best.selection_metric,
        "trial_id": best.trial_id, "run_id": best.run_id, "intermediate_task": best.intermediate_task,
        "intermediate_lr": best.params.get(PARAM_INTERMEDIATE_LR), "target_lr": best.params.get(PARAM_TARGET_LR),
        "en_dev_score": best.metrics.get(FINAL_EN_DEV), "all_languages_mean": best.metrics.get(FINAL_ALL_LANGUAGES),
        "zero_shot_mean": best.metrics.get(FINAL_ZERO_SHOT), "completed_trials": selection.candidates,
        "verified_en_dev_score": verified_score,
    }
    return {TAG_PREFIX + k: str(v) for k, v in tags.items() if v is not None}


def register_export(tracking_uri: str, exported: str | os.PathLike, selection: Selection, study: str,
                    model_name: str, verified_score: float | None = None) -> Registered:
    """Log `exported` to the trial's run and register it under `model_name` with the target's alias."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    run_id = selection.best.run_id
    source = f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}"
    alias = alias_for(selection.target_task, selection.rule)
    tags = version_tags(selection, study, verified_score)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        try:
            client.create_registered_model(
                model_name, tags={TAG_PREFIX + "kind": "xstilts-export"},
                description="Models exported by `xstilts export`: one alias per target task (<target>-best: "
                            "selected on English dev; <target>-best-oracle: on all languages' dev, an oracle).")
        except MlflowException:  # created meanwhile by another export
            client.get_registered_model(model_name)
    # The same trial exported again under the same rule: move the alias to its version, log nothing new.
    rule_tag = TAG_PREFIX + "selection_rule"
    existing = [v for v in client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
                if v.source == source and v.tags.get(rule_tag) == selection.rule]
    if existing:
        version = max(existing, key=lambda v: int(v.version))
        client.set_registered_model_alias(model_name, alias, version.version)
        return Registered(model_name, str(version.version), alias, source, True)
    client.log_artifacts(run_id, str(exported), MODEL_ARTIFACT_PATH)
    version = client.create_model_version(
        model_name, source=source, run_id=run_id, tags=tags,
        description=f"{selection.target_task}: trial {selection.best.trial_id} of study {study}, selected by "
                    f"{selection.rule} ({selection.best.selection_metric} {selection.score():.4f}).")
    client.set_registered_model_alias(model_name, alias, version.version)
    return Registered(model_name, str(version.version), alias, source, False)


@dataclass(frozen=True)
class Fetched:
    path: Path
    model: str
    version: str
    alias: str
    tags: dict[str, str]

    @property
    def logged_en_dev_score(self) -> float | None:
        value = self.tags.get(TAG_PREFIX + "en_dev_score")
        return float(value) if value is not None else None


def fetch_registered(tracking_uri: str, model_name: str, target: str, out_dir: str | os.PathLike,
                     rule: str = "en_dev") -> Fetched:
    """Download the version the target's alias points at into `out_dir` (new or empty; all or nothing)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = _client(tracking_uri)
    alias = alias_for(target, rule)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as error:
        raise RegistryError(f"no registered model {model_name!r} with alias {alias!r} at {tracking_uri} "
                            f"({str(error).splitlines()[0]}); run `xstilts export --target {target} ...` first") from None
    out = Path(out_dir).absolute()
    if out.exists() and any(out.iterdir()):
        raise RegistryError(f"--out {out} exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.fetch-", dir=out.parent))
    try:
        uri = client.get_model_version_download_uri(model_name, version.version)
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(staging),
                                                              tracking_uri=tracking_uri))
        if not (downloaded / "config.json").exists() or not (downloaded / SELECTION_FILE).exists():
            raise RegistryError(f"version {version.version} of {model_name!r} ({uri}) is not an xstilts export "
                                f"(no config.json / {SELECTION_FILE})")
        if out.exists():
            out.rmdir()
        os.replace(downloaded, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Fetched(out, model_name, str(version.version), alias, dict(version.tags))


def selection_info(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / SELECTION_FILE).read_text())
