"""A real study end to end: local Ray, Ray Train TorchTrainer, OptunaSearch + ASHA, an MLflow
sqlite store, then `analyze` and `export` as a user runs them. No mocks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from xstilts.study.config import DEFAULT_CONFIG

pytestmark = pytest.mark.e2e

TARGETS = ["synthetic_xnli", "synthetic_panx"]


def _cli(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return result


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="e2e", num_samples=2, max_concurrent_trials=2)
    raw["training"].update(target_epochs=3, intermediate_epochs=1, max_train_examples=500)
    raw["search"].update(grace_period=2)
    (root / "study.yaml").write_text(yaml.safe_dump(raw))
    result = _cli(root, "run", "--config", "study.yaml", "--name", "e2e-study")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    uri = f"sqlite:///{root / 'xstilts_runs' / 'mlflow.db'}"
    return root, uri, result.stdout


def _runs(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xstilts")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("xstilts.run_kind") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return parents, children


def test_mlflow_has_one_parent_and_one_nested_run_per_trial(study):
    root, uri, stdout = study
    parents, children = _runs(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["xstilts.study"] == "e2e-study"
    assert len(children) == 4  # 2 targets x 2 trials: no duplicate, no orphan run
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert len({c.data.tags["xstilts.trial_id"] for c in children}) == 4
    for child in children:
        params = child.data.params
        assert params["target_task"] in TARGETS
        assert params["intermediate_task"] in ("none", "synthetic_mnli", "synthetic_qqp")
        assert float(params["target_lr"]) > 0
        metrics = child.data.metrics
        if child.info.status == "FINISHED":
            metric = "accuracy" if params["target_task"] == "synthetic_xnli" else "f1"
            for language in ("en", "near", "mid", "far"):
                assert 0 <= metrics[f"final/dev/{language}/{metric}"] <= 100
            assert os.path.isfile(os.path.join(child.data.tags["xstilts.checkpoint"], "config.json"))
        else:  # stopped by ASHA: recorded as such, with the epochs it did run
            assert child.info.status == "KILLED" and child.data.tags.get("xstilts.stopped_early") == "true", (
                f"{child.info.run_name}: {child.info.status}, error: {child.data.tags.get('xstilts.error')}\n{stdout[-4000:]}")
            assert "en_dev_score" in metrics
    for target in TARGETS:
        assert any(c.info.status == "FINISHED" and c.data.params["target_task"] == target for c in children)
    # per-epoch history of the selection metric is there (not only the last value)
    client = MlflowClient(uri)
    history = client.get_metric_history(children[0].info.run_id, "en_dev_score")
    assert len(history) >= 2
    assert "best trial per target task" in stdout and "mlflow ui" in stdout
    # Direct links to the runs page and the study's run (MLflow 3 opens experiments elsewhere),
    # and the experiment marked as model training.
    experiment = client.get_experiment(parents[0].info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs_page = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs"
    assert runs_page in stdout and f"{runs_page}/{parents[0].info.run_id}" in stdout


def test_english_dev_ends_above_chance(study):
    _, uri, _ = study
    _, children = _runs(uri)
    for child in children:
        if child.info.status != "FINISHED":
            continue
        m = child.data.metrics
        metric = "accuracy" if child.data.params["target_task"] == "synthetic_xnli" else "f1"
        assert m[f"final/dev/en/{metric}"] > m[f"final/chance/en/{metric}"] + 10


def test_analyze_picks_best_english_dev_trial(study):
    root, uri, _ = study
    result = _cli(root, "analyze", "--study", "e2e-study", "--tracking-uri", uri, "--json")
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)["best"]
    _, children = _runs(uri)
    for target in TARGETS:
        finished = [c for c in children if c.info.status == "FINISHED" and c.data.params["target_task"] == target]
        top = max(finished, key=lambda c: c.data.metrics["final/en_dev_score"])
        assert best[target]["run_id"] == top.info.run_id
        assert best[target]["en_dev_score"] == top.data.metrics["final/en_dev_score"]
        assert set(best[target]["per_language"]) == {"en", "near", "mid", "far"}


def test_export_loads_with_from_pretrained_and_reproduces_metric(study):
    root, uri, _ = study
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xstilts.tasks import get_task
    from xstilts.tasks.modeling import evaluate

    out = root / "exported-xnli"
    result = _cli(root, "export", "--study", "e2e-study", "--target", "synthetic_xnli", "--out", str(out), "--tracking-uri", uri)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (out / "train_state.pt").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.id2label[0] == "entailment"
    task = get_task("synthetic_xnli")
    score = evaluate(task, model, tokenizer, task.load("dev", "en"))["accuracy"]
    selection = json.loads((out / "xstilts_selection.json").read_text())
    logged = MlflowClient(uri).get_run(selection["mlflow_run_id"]).data.metrics["final/en_dev_score"]
    assert score == pytest.approx(logged, abs=1e-9)
    # A second export into the same (non-empty) folder is refused, and writes nothing.
    again = _cli(root, "export", "--study", "e2e-study", "--target", "synthetic_xnli", "--out", str(out), "--tracking-uri", uri)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_export_tagging_target(study):
    root, uri, _ = study
    from transformers import AutoModelForTokenClassification

    out = root / "exported-panx"
    result = _cli(root, "export", "--study", "e2e-study", "--target", "synthetic_panx", "--out", str(out), "--tracking-uri", uri)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "re-scored English dev f1" in result.stdout
    model = AutoModelForTokenClassification.from_pretrained(out)
    assert model.config.num_labels == 7


def test_analyze_unknown_study_is_bad_input(study):
    root, uri, _ = study
    result = _cli(root, "analyze", "--study", "no-such-study", "--tracking-uri", uri)
    assert result.returncode == 2 and "no-such-study" in result.stderr


def test_running_a_study_name_again_is_refused_and_writes_nothing(study):
    root, uri, _ = study
    before = sorted(r.info.run_id for group in _runs(uri) for r in group)
    files_before = sorted(str(p) for p in (root / "xstilts_runs").rglob("*") if "mlflow.db" not in p.name)
    result = _cli(root, "run", "--config", "study.yaml", "--name", "e2e-study")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'--name'" in lines[0] and "xstilts resume e2e-study" in lines[0], result.stderr
    assert "Started a local Ray" not in result.stderr
    assert sorted(r.info.run_id for group in _runs(uri) for r in group) == before  # no orphan MLflow run
    files_after = sorted(str(p) for p in (root / "xstilts_runs").rglob("*") if "mlflow.db" not in p.name)
    assert files_after == files_before


def test_each_target_has_an_optuna_study_users_can_open(study):
    """The study's Optuna studies persist beside the MLflow store (optuna-dashboard opens them)."""
    import optuna

    root, uri, stdout = study
    url = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).parent / "optuna.db")
    assert f"optuna-dashboard {url}" in stdout
    parents, children = _runs(uri)
    for target in TARGETS:
        loaded = optuna.load_study(study_name=f"e2e-study/{target}", storage=url)
        trials = [c for c in children if c.data.params["target_task"] == target]
        assert len(loaded.trials) == len(trials) == 2
        # Every trial with its parameters and a value (the last English dev score it reported).
        drawn = sorted((t.params["intermediate_task"], t.params["target_lr"]) for t in loaded.trials)
        recorded = sorted((c.data.params["intermediate_task"], float(c.data.params["target_lr"])) for c in trials)
        assert drawn == recorded
        for trial in loaded.trials:
            assert trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            assert trial.value is not None and 0 <= trial.value <= 100
        # Trials ASHA stopped (KILLED runs) are pruned in Optuna, with their last score as value;
        # those that ran every epoch are complete.
        pruned = [t for t in loaded.trials if t.state == optuna.trial.TrialState.PRUNED]
        assert len(pruned) == sum(1 for c in trials if c.info.status == "KILLED")
        assert all(t.intermediate_values and t.value == t.intermediate_values[t.last_step] for t in pruned)
