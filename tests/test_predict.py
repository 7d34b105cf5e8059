"""`xstilts predict` end to end: a tiny real study on the embedded default (local Ray, Ray Train,
Optuna, MLflow; no mocks), its selected models' predictions in XTREME's submission layout, scored
by `xstilts evaluate` as a user runs it.

On --split dev the evaluate scores must equal what the study logged (the same split, the same
cap); on --split test (the synthetic tasks' held-out split) evaluate must score exactly what the
selected models score on it in memory, every language present, in the layout evaluate reads."""
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

# Two trainable kinds (classification, tagging) and a retrieval target (through phase 2).
TARGETS = {"synthetic_xnli": "accuracy", "synthetic_panx": "f1", "synthetic_tatoeba": "accuracy"}
LANGUAGES = {"synthetic_xnli": ("en", "near", "mid", "far"), "synthetic_panx": ("en", "near", "mid", "far"),
             "synthetic_tatoeba": ("near", "mid", "far")}


def _cli(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xstilts.study.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One trial per target, all through synthetic_mnli (one shared phase 2), small caps."""
    root = tmp_path_factory.mktemp("predict")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="predict", num_samples=1, max_concurrent_trials=2, target_tasks=list(TARGETS),
               intermediate_tasks=["synthetic_mnli"])
    raw["search_space"] = {"intermediate_lr": {"type": "choice", "values": [0.0003]},
                           "target_lr": {"type": "choice", "values": [0.001]}}
    raw["search"].update(scheduler="fifo")
    raw["training"].update(intermediate_epochs=1, target_epochs=2, max_train_examples=300, max_eval_examples=60)
    (root / "study.yaml").write_text(yaml.safe_dump(raw))
    result = _cli(root, "run", "--config", "study.yaml", "--name", "predict-study")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, f"sqlite:///{root / 'xstilts_runs' / 'mlflow.db'}"


def _xstilts(capsys, *args: str) -> tuple[int, str, str]:
    """An `xstilts` command in this process (the same entry point as the console script; no
    interpreter start-up per call): (exit code, stdout, stderr)."""
    from xstilts.study.cli import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _selected_runs(uri: str) -> dict:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("xstilts")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    return {r.data.params["target_task"]: r for r in runs if r.info.status == "FINISHED"}


def _evaluate(capsys, predictions: Path, labels: Path) -> dict:
    code, out, err = _xstilts(capsys, "evaluate", "--prediction-folder", str(predictions), "--label-folder", str(labels))
    assert code == 0, err
    return json.loads(out)


def test_dev_predictions_score_what_the_study_logged(study, capsys):
    root, uri = study
    out, gold = root / "dev-preds", root / "dev-gold"
    result = _cli(root, "predict", "--study", "predict-study", "--tracking-uri", uri, "--split", "dev",
                  "--out", str(out), "--labels-out", str(gold))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"xstilts evaluate --prediction-folder {out} --label-folder {gold}" in result.stdout
    # The submission layout: one folder per target, test-<lang>.tsv per language, nothing else.
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        f"{task}/test-{lang}.tsv" for task, languages in LANGUAGES.items() for lang in languages)
    assert not [p for p in root.iterdir() if p.name.startswith(".dev-")]  # no staging folder left behind
    scores = _evaluate(capsys, out, gold)
    runs = _selected_runs(uri)
    for task, metric in TARGETS.items():
        logged = runs[task].data.metrics
        assert set(scores[task][metric]) == set(LANGUAGES[task])
        for language in LANGUAGES[task]:
            assert scores[task][metric][language] == pytest.approx(logged[f"final/dev/{language}/{metric}"], abs=1e-9), (
                task, language)
    # The retrieval target predicted with the phase-2 encoder its trial scored: a phase-cache entry.
    tatoeba = runs["synthetic_tatoeba"]
    assert tatoeba.data.params["intermediate_task"] == "synthetic_mnli"
    assert "phase_cache" in tatoeba.data.tags["xstilts.checkpoint"]
    assert "synthetic_tatoeba: trial" in result.stdout and tatoeba.data.tags["xstilts.checkpoint"] in result.stdout


def test_test_predictions_are_a_complete_submission_that_scores_as_the_model_does(study, capsys):
    """The test split (generated apart from dev) in full: the files, read back by evaluate, score
    exactly what the selected models score on it in memory (modeling.evaluate, and for the
    retrieval target evaluate_retrieval with the phase-2 encoder the trial used)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xstilts.tasks import get_task
    from xstilts.tasks.modeling import evaluate
    from xstilts.tasks.retrieval import evaluate_retrieval, load_encoder

    root, uri = study
    out, gold = root / "test-preds", root / "test-gold"
    out.mkdir()  # an existing empty folder is fine
    code, stdout, stderr = _xstilts(capsys, "predict", "--study", "predict-study", "--tracking-uri", uri, "--out", str(out),
                                    "--labels-out", str(gold), "--target", "synthetic_xnli", "--target", "synthetic_tatoeba")
    assert code == 0, stdout + stderr
    assert sorted(p.name for p in out.iterdir()) == ["synthetic_tatoeba", "synthetic_xnli"]
    scores = _evaluate(capsys, out, gold)
    runs = _selected_runs(uri)
    xnli = get_task("synthetic_xnli")
    test, dev = xnli.load("test", "en"), xnli.load("dev", "en")
    # The whole test split (300 generated examples; 200 Tatoeba pairs), not the study's dev cap of 60.
    assert (gold / "synthetic_xnli" / "test-en.tsv").read_text().split() == [e.label for e in test]
    assert not set(test) & set(dev)
    assert len((out / "synthetic_tatoeba" / "test-far.tsv").read_text().splitlines()) == 200
    assert set((out / "synthetic_xnli" / "test-en.tsv").read_text().split()) <= set(xnli.labels)
    checkpoint = runs["synthetic_xnli"].data.tags["xstilts.checkpoint"]
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    for language in ("en", "far"):
        in_memory = evaluate(xnli, model, tokenizer, xnli.load("test", language), batch_size=128)["accuracy"]
        assert scores["synthetic_xnli"]["accuracy"][language] == pytest.approx(in_memory, abs=1e-9)
    tatoeba, params = get_task("synthetic_tatoeba"), runs["synthetic_tatoeba"].data.params
    encoder = load_encoder(runs["synthetic_tatoeba"].data.tags["xstilts.checkpoint"])
    in_memory = evaluate_retrieval(tatoeba, encoder, AutoTokenizer.from_pretrained(params["model"]), split="test",
                                   layer=int(params["retrieval_layer"]))
    for language in ("near", "mid", "far"):
        assert scores["synthetic_tatoeba"]["accuracy"][language] == pytest.approx(in_memory[language]["accuracy"], abs=1e-9)


def test_refusals_write_nothing(study, tmp_path, capsys):
    root, uri = study
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    code, _, err = _xstilts(capsys, "predict", "--study", "predict-study", "--tracking-uri", uri, "--out", str(taken))
    assert code == 2 and "not empty" in err
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    out = tmp_path / "preds"
    code, _, err = _xstilts(capsys, "predict", "--study", "predict-study", "--tracking-uri", uri, "--out", str(out),
                            "--target", "synthetic_qqp")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "'synthetic_qqp' has no completed trial" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".preds*"))


def test_a_target_without_test_files_is_named_with_the_missing_file(tmp_path):
    """Real tasks read their test files from the official layouts; a missing one is one line
    naming the target, the language and the files tried (what `predict` prints, exit 2)."""
    from xstilts.analysis.records import TrialRecord
    from xstilts.analysis.select import Selection
    from xstilts.study.predict import PredictError, plan_targets

    (tmp_path / "xnli").mkdir()
    (tmp_path / "xnli" / "dev-en.tsv").write_text("a\tb\tentailment\n")
    trial = TrialRecord("run", "t1", "FINISHED", "xnli", "none", "accuracy", {"seed": "0", "data_dir": str(tmp_path)},
                        {"final/en_dev_score": 50.0}, "/nowhere")
    with pytest.raises(PredictError) as error:
        plan_targets({"xnli": Selection("xnli", "en_dev", trial, 1)}, None, "test", None, None)
    message = str(error.value)
    assert "\n" not in message and message.startswith("target xnli has no test data for ar")
    assert "xnli/XNLI-1.0/xnli.test.tsv" in message and "xnli/test-{lang}.tsv".format(lang="ar") in message
    # The same folder with the test files of every language: planned (nothing read yet).
    from xstilts.tasks.xtreme_eval import OFFICIAL_LANGUAGES

    for language in OFFICIAL_LANGUAGES["xnli"]:
        (tmp_path / "xnli" / f"test-{language}.tsv").write_text("a\tb\tentailment\n")
    (target,) = plan_targets({"xnli": Selection("xnli", "en_dev", trial, 1)}, None, "test", None, None)
    assert target.folder_format == "xnli" and target.options.max_examples is None
