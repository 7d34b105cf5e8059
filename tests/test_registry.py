"""The MLflow model registry side of `xstilts export`, and the report of a real study.

The first tests use a hand-made store and folder (no Ray, seconds). The `e2e` ones share ONE small
real study (local Ray, Ray Train, Optuna, the sqlite store; 2 trials per target, short epochs):
export registers the model with an alias per target, `export --from-registry` fetches it back,
and the fetched folder loads with AutoModelFor...from_pretrained and reproduces the logged
English dev metric."""
from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from xstilts.analysis.records import TrialRecord
from xstilts.analysis.model_registry import MODEL_ARTIFACT_PATH, RegistryError, alias_for, fetch_registered, register_export
from xstilts.analysis.select import Selection
from xstilts.study.config import DEFAULT_CONFIG
from cli_in_process import cli as cli_inprocess

STUDY = "registry-study"
TARGETS = ["synthetic_xnli", "synthetic_panx"]




# ------------------------------------------------------------------------------------------------
# Without Ray: a hand-made trial run and export folder
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake-store")  # one sqlite store: creating one takes seconds
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("xstilts", artifact_location=(root / "artifacts").as_uri())


@pytest.fixture()
def fake(store, tmp_path, request):
    uri, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id
    client.set_terminated(run_id)
    folder = tmp_path / "exported"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    (folder / "xstilts_selection.json").write_text(json.dumps({"target_task": "synthetic_xnli"}))
    record = TrialRecord(run_id, "t1", "FINISHED", "synthetic_xnli", "synthetic_mnli", "accuracy",
                         {"target_lr": "0.001", "intermediate_lr": "0.0003"},
                         {"final/en_dev_score": 81.5, "final/all_languages_mean": 60.25, "final/zero_shot_mean": 53.17},
                         "/ckpt")
    model = f"m-{request.node.name}"[:60]  # a registered model per test
    return tmp_path, uri, client, folder, record, model


def test_register_sets_alias_tags_and_logs_the_folder(fake):
    tmp_path, uri, client, folder, record, model = fake
    registered = register_export(uri, folder, Selection("synthetic_xnli", "en_dev", record, 4), "s1", model, 81.5)
    assert (registered.version, registered.alias, registered.reused) == ("1", "synthetic_xnli-best", False)
    version = client.get_model_version_by_alias(model, "synthetic_xnli-best")
    assert version.source == f"runs:/{record.run_id}/{MODEL_ARTIFACT_PATH}" and version.run_id == record.run_id
    tags = version.tags
    assert tags["xstilts.selection_rule"] == "en_dev" and tags["xstilts.study"] == "s1"
    assert float(tags["xstilts.en_dev_score"]) == 81.5 and float(tags["xstilts.all_languages_mean"]) == 60.25
    assert tags["xstilts.intermediate_task"] == "synthetic_mnli" and tags["xstilts.completed_trials"] == "4"
    assert {a.path for a in client.list_artifacts(record.run_id, MODEL_ARTIFACT_PATH)} >= {
        f"{MODEL_ARTIFACT_PATH}/config.json", f"{MODEL_ARTIFACT_PATH}/sub"}
    # the same trial and rule again: the alias stays on the same version, nothing new is logged
    again = register_export(uri, folder, Selection("synthetic_xnli", "en_dev", record, 4), "s1", model, 81.5)
    assert again.reused and again.version == "1"
    # the oracle rule gets its own alias and version
    oracle = register_export(uri, folder, Selection("synthetic_xnli", "oracle_all_languages", record, 4), "s1", model)
    assert (oracle.alias, oracle.version) == ("synthetic_xnli-best-oracle", "2")
    aliases = client.get_registered_model(model).aliases
    assert {alias: str(version) for alias, version in aliases.items()} == {"synthetic_xnli-best": "1", "synthetic_xnli-best-oracle": "2"}


def test_fetch_registered_downloads_the_alias_version(fake):
    tmp_path, uri, client, folder, record, model = fake
    register_export(uri, folder, Selection("synthetic_xnli", "en_dev", record, 4), "s1", model, 81.5)
    fetched = fetch_registered(uri, model, "synthetic_xnli", tmp_path / "fetched")
    assert fetched.version == "1" and fetched.logged_en_dev_score == 81.5
    assert (tmp_path / "fetched" / "sub" / "weights.bin").read_bytes() == b"\x00\x01"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fetched")]  # no staging left behind
    with pytest.raises(RegistryError, match="not empty"):
        fetch_registered(uri, model, "synthetic_xnli", tmp_path / "fetched")
    with pytest.raises(RegistryError, match="synthetic_panx-best"):
        fetch_registered(uri, model, "synthetic_panx", tmp_path / "other")
    with pytest.raises(RegistryError, match="no registered model 'nope'"):
        fetch_registered(uri, "nope", "synthetic_xnli", tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_alias_names():
    assert alias_for("synthetic_xnli") == "synthetic_xnli-best"
    assert alias_for("xnli", "oracle_all_languages") == "xnli-best-oracle"


def test_from_registry_bad_input(fake):
    tmp_path, uri, *_ = fake
    code, _, stderr = cli_inprocess("export", "--from-registry", "--target", "synthetic_xnli", "--out", str(tmp_path / "o"),
                                    "--tracking-uri", uri, "--registered-model", "never-registered")
    assert code == 2 and "synthetic_xnli-best" in stderr
    code, _, stderr = cli_inprocess("export", "--from-registry", "--study", "s", "--target", "synthetic_xnli",
                                    "--out", str(tmp_path / "o"), "--tracking-uri", uri)
    assert code == 2 and "drop --study" in stderr


# ------------------------------------------------------------------------------------------------
# One real study
# ------------------------------------------------------------------------------------------------

def _cli(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xstilts.study.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="registry", num_samples=2, max_concurrent_trials=2)
    raw["training"].update(target_epochs=2, intermediate_epochs=1, max_train_examples=400)
    raw["search"].update(scheduler="fifo", grace_period=1)  # both trials finish: `none` (baseline_first) + one other
    (root / "study.yaml").write_text(yaml.safe_dump(raw))
    result = _cli(root, "run", "--config", "study.yaml", "--name", STUDY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, f"sqlite:///{root / 'xstilts_runs' / 'mlflow.db'}"


def _logged_en_dev(uri: str, folder: Path) -> float:
    selection = json.loads((folder / "xstilts_selection.json").read_text())
    return MlflowClient(uri).get_run(selection["mlflow_run_id"]).data.metrics["final/en_dev_score"]


@pytest.mark.e2e
def test_export_registers_and_from_registry_reproduces(study):
    root, uri = study
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xstilts.tasks import get_task
    from xstilts.tasks.modeling import evaluate

    exported = root / "xnli-exported"
    result = _cli(root, "export", "--study", STUDY, "--target", "synthetic_xnli", "--out", str(exported), "--tracking-uri", uri)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alias synthetic_xnli-best" in result.stdout and "--from-registry" in result.stdout
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("xstilts", "synthetic_xnli-best")
    selection = json.loads((exported / "xstilts_selection.json").read_text())
    assert version.run_id == selection["mlflow_run_id"] and version.tags["xstilts.study"] == STUDY
    assert version.tags["xstilts.selection_rule"] == "en_dev"

    fetched = root / "xnli-fetched"
    result = _cli(root, "export", "--from-registry", "--target", "synthetic_xnli", "--out", str(fetched), "--tracking-uri", uri)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "re-scored English dev" in result.stdout
    comparison = filecmp.dircmp(exported, fetched)
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files
    model = AutoModelForSequenceClassification.from_pretrained(fetched)
    tokenizer = AutoTokenizer.from_pretrained(fetched)
    task = get_task("synthetic_xnli")
    score = evaluate(task, model, tokenizer, task.load("dev", "en"))["accuracy"]
    assert score == pytest.approx(_logged_en_dev(uri, fetched), abs=1e-9)
    assert score == pytest.approx(float(version.tags["xstilts.en_dev_score"]), abs=1e-9)


@pytest.mark.e2e
def test_tagging_target_alias_and_no_register(study):
    root, uri = study
    from transformers import AutoModelForTokenClassification

    client = MlflowClient(uri, registry_uri=uri)
    result = _cli(root, "export", "--study", STUDY, "--target", "synthetic_panx", "--out", str(root / "panx-a"),
                  "--tracking-uri", uri, "--no-verify")
    assert result.returncode == 0, result.stdout + result.stderr
    versions = len(client.search_model_versions("name = 'xstilts'"))
    result = _cli(root, "export", "--study", STUDY, "--target", "synthetic_panx", "--out", str(root / "panx-b"),
                  "--tracking-uri", uri, "--no-register", "--no-verify")
    assert result.returncode == 0 and "registered" not in result.stdout
    assert len(client.search_model_versions("name = 'xstilts'")) == versions
    fetched = root / "panx-fetched"
    result = _cli(root, "export", "--from-registry", "--target", "synthetic_panx", "--out", str(fetched), "--tracking-uri", uri)
    assert result.returncode == 0, result.stdout + result.stderr
    assert AutoModelForTokenClassification.from_pretrained(fetched).config.num_labels == 7
    assert set(client.get_registered_model("xstilts").aliases) >= {"synthetic_xnli-best", "synthetic_panx-best"}


@pytest.mark.e2e
def test_report_of_the_real_study(study):
    root, uri = study
    out = root / "report"
    result = _cli(root, "report", "--study", STUDY, "--out", str(out), "--tracking-uri", uri)
    assert result.returncode == 0, result.stdout + result.stderr
    page = (out / "report.html").read_text()
    assert "none (baseline)" in page and page.count("data:image/png;base64,") >= 4
    data = json.loads((out / "summary.json").read_text())["study"]
    assert data["targets"] == sorted(TARGETS) and "none" in data["intermediates"]
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("xstilts").experiment_id],
                                filter_string=f"tags.`xstilts.study` = '{STUDY}' and tags.`xstilts.run_kind` = 'study'")[0]
    logged = {os.path.basename(a.path) for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report.html", "report.md", "summary.json"} <= logged
