"""The multimodal question end to end, and its report section.

- The tiny study (search_spaces/tiny/multimodal_nli.yaml: none vs synthetic MNLI -> synthetic
  visual NLI in English -> zero-shot in near/mid/far) through the real `xstilts run` (local Ray,
  Ray Train, Optuna's grid, MLflow sqlite) and `xstilts report`. No mocks.
- The report section's deltas and seed intervals on records built here (the analysis reads
  nothing but records), checked against `bootstrap_delta` directly.
- The full study config (search_spaces/multimodal_nli.yaml) parses with IGLUE-layout data.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from xstilts.analysis.records import TrialRecord
from xstilts.analysis.multimodal import ZERO_SHOT, multimodal_blocks, multimodal_deltas
from xstilts.analysis.tables import summarize
from xstilts.analysis.uncertainty import bootstrap_delta
from xstilts.tasks.record_schema import (FINAL_ALL_LANGUAGES, FINAL_EN_DEV, PARAM_INTERMEDIATE_LR, PARAM_TARGET_LR,
                                         final_chance, final_dev)

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
LANGUAGES = ("en", "near", "mid", "far")


# ------------------------------------------------------------------------------------------------
# The tiny study, end to end
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("multimodal")
    result = subprocess.run(
        [sys.executable, "-m", "xstilts.study.cli", "run", "--config", str(SPACES / "tiny" / "multimodal_nli.yaml"),
         "--name", "mm"], cwd=root, capture_output=True, text=True, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    uri = f"sqlite:///{root / 'xstilts_runs' / 'mlflow.db'}"
    from xstilts.study.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["report", "--study", "mm", "--out", str(root / "report"), "--tracking-uri", uri, "--no-log"])
    assert code == 0, err.getvalue()
    return root, uri


@pytest.mark.e2e
def test_tiny_multimodal_study(tiny_study):
    root, uri = tiny_study
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("xstilts").experiment_id],
                              "tags.`xstilts.study` = 'mm' and tags.`xstilts.run_kind` = 'trial'")
    assert sorted(r.data.params["intermediate_task"] for r in runs) == ["none", "synthetic_mnli"]
    assert all(r.info.status == "FINISHED" for r in runs), [r.data.tags.get("xstilts.error") for r in runs]
    for run in runs:
        metrics = run.data.metrics
        chance = metrics[final_chance("en", "accuracy")]
        # English dev clearly above the majority class (the synthetic labels are balanced: ~33 %)
        assert metrics[FINAL_EN_DEV] >= chance + 10, (run.data.params["intermediate_task"], metrics[FINAL_EN_DEV], chance)
        assert all(0 <= metrics[final_dev(lang, "accuracy")] <= 100 for lang in LANGUAGES)  # every language scored
        # the phase-3 checkpoint is the multimodal model's folder, and it scores what was logged
        checkpoint = Path(run.data.tags["xstilts.checkpoint"])
        assert (checkpoint / "multimodal.json").is_file() and json.loads((checkpoint / "multimodal.json").read_text())["fusion"] == "single-stream"
    best = max(runs, key=lambda r: r.data.metrics[FINAL_EN_DEV])
    _rescore(best)

    md = (root / "report" / "report.md").read_text()
    assert "## Multimodal targets: intermediate vs none" in md
    section = json.loads((root / "report" / "summary.json").read_text())["multimodal"]["synthetic_xvnli"]
    assert section["zero_shot_languages"] == ["near", "mid", "far"]
    arm = section["arms"]["synthetic_mnli"]
    by_arm = {r.data.params["intermediate_task"]: r.data.metrics for r in runs}
    for lang in LANGUAGES:  # the deltas are the logged scores' differences, per language
        logged = by_arm["synthetic_mnli"][final_dev(lang, "accuracy")] - by_arm["none"][final_dev(lang, "accuracy")]
        assert arm["deltas"][lang] == pytest.approx(logged)
    assert arm["deltas"][ZERO_SHOT] == pytest.approx(sum(arm["deltas"][l] for l in ("near", "mid", "far")) / 3)
    assert arm["intervals"][ZERO_SHOT] is None and "one seed per configuration" in arm["verdict"]
    assert f"synthetic_mnli vs none: zero-shot mean {arm['deltas'][ZERO_SHOT]:+.2f} points" in md


def _rescore(run) -> None:
    """Load the checkpoint as a user would and re-score English dev: the logged number comes back."""
    import transformers
    from transformers import AutoTokenizer

    from xstilts.tasks import DataOptions, get_task
    from xstilts.tasks.modeling import evaluate, load_model_for_task

    transformers.logging.set_verbosity_error()
    task, folder = get_task("synthetic_xvnli"), run.data.tags["xstilts.checkpoint"]
    model, tokenizer = load_model_for_task(task, folder), AutoTokenizer.from_pretrained(folder)
    examples = task.load("dev", "en", DataOptions(max_examples=int(run.data.params["training.max_eval_examples"])))
    score = evaluate(task, model, tokenizer, examples, max_length=64)["accuracy"]
    assert score == pytest.approx(run.data.metrics[FINAL_EN_DEV])


# ------------------------------------------------------------------------------------------------
# The report section on records with seeds
# ------------------------------------------------------------------------------------------------

def _trial(n: int, intermediate: str, scores: dict[str, float], lr: str = "0.003") -> TrialRecord:
    metrics = {final_dev(lang, "accuracy"): v for lang, v in scores.items()}
    metrics.update({final_chance(lang, "accuracy"): 34.0 for lang in scores})
    metrics.update({FINAL_EN_DEV: scores["en"], FINAL_ALL_LANGUAGES: sum(scores.values()) / len(scores)})
    params = {"target_task": "synthetic_xvnli", "intermediate_task": intermediate,
              PARAM_INTERMEDIATE_LR: "0.0" if intermediate == "none" else "0.001", PARAM_TARGET_LR: lr}
    return TrialRecord(f"r{n}", f"t{n}", "FINISHED", "synthetic_xvnli", intermediate, "accuracy", params, metrics,
                       f"/ckpt/{n}", start_time=n)


def test_report_section_deltas_and_seed_intervals():
    none = [dict(en=60, near=50, mid=40, far=30), dict(en=62, near=52, mid=41, far=33), dict(en=61, near=51, mid=39, far=31)]
    mnli = [dict(en=63, near=58, mid=47, far=36), dict(en=64, near=60, mid=46, far=37), dict(en=62, near=59, mid=48, far=38)]
    weak = dict(en=10, near=10, mid=10, far=10)  # another configuration of mnli, worse on English dev: not selected
    trials = [_trial(i, "none", s) for i, s in enumerate(none)] + [_trial(10 + i, "synthetic_mnli", s) for i, s in enumerate(mnli)]
    trials.append(_trial(20, "synthetic_mnli", weak, lr="0.0001"))
    summary = summarize(trials, "s")
    result = multimodal_deltas(summary, "synthetic_xvnli")
    (arm,) = result.arms
    assert result.zero_shot_languages == ["near", "mid", "far"] and arm.seeds == 3
    # the point deltas: the English-dev-selected trials (none: seed 1; mnli: seed 1)
    assert arm.deltas["near"] == 60 - 52 and arm.deltas[ZERO_SHOT] == pytest.approx((60 + 46 + 37) / 3 - (52 + 41 + 33) / 3)
    # the intervals: each arm's 3 seeds at its best configuration, resampled
    for lang in ("near", "far"):
        expected = bootstrap_delta([s[lang] for s in mnli], [s[lang] for s in none])
        got = arm.intervals[lang]
        assert (got.delta, got.low, got.high) == pytest.approx(expected)
    zero = bootstrap_delta([sum(s[l] for l in ("near", "mid", "far")) / 3 for s in mnli],
                           [sum(s[l] for l in ("near", "mid", "far")) / 3 for s in none])
    assert (arm.intervals[ZERO_SHOT].delta, arm.intervals[ZERO_SHOT].low) == pytest.approx(zero[:2])
    assert arm.verdict() == "gain" and zero[1] > 0
    intro, table = multimodal_blocks(summary)
    assert "zero-shot cross-lingual" in intro
    rows = {row[0]: row for row in table.rows}
    assert rows["none (baseline)"][1:5] == ["62.00", "52.00", "41.00", "33.00"]
    assert rows["synthetic_mnli"][-1] == "gain" and rows["synthetic_mnli"][2].endswith(" *")
    assert rows["majority class"][1] == "34.00"


def test_no_section_without_a_multimodal_target():
    from dataclasses import replace

    record = _trial(1, "none", dict(en=60, near=50, mid=40, far=30))
    text = replace(record, target_task="synthetic_xnli", params={**record.params, "target_task": "synthetic_xnli"})
    assert multimodal_blocks(summarize([text], "x")) == []
    assert multimodal_blocks(summarize([_trial(2, "synthetic_mnli", dict(en=60, near=50, mid=40, far=30))], "x")) == []


# ------------------------------------------------------------------------------------------------
# The full study config
# ------------------------------------------------------------------------------------------------

def test_full_config_asks_the_question(tmp_path):
    """multimodal_nli.yaml parses and passes the pre-flight checks against IGLUE's layout (its
    English training files and feature stores, written here under data_dir/iglue/); the text
    intermediates are left out here because their files are not part of this fixture."""
    import shutil

    import numpy as np

    from xstilts.study.config import ConfigError, parse_config
    from xstilts.tasks.iglue import encode_image, write_store

    iglue = tmp_path / "data" / "iglue"
    record = {"gold_label": "entailment", "sentence1": "c", "sentence2": "h", "captionID": "1.jpg#0",
              "pairID": "1.jpg#0r1e", "Flikr30kID": "1"}
    nlvr = {"sentence": "s", "label": "True", "identifier": "train-1-0-0"}
    for path, line in (("XVNLI/annotations/en/train.jsonl", record), ("nlvr2/annotations/train.jsonl", nlvr)):
        (iglue / path).parent.mkdir(parents=True, exist_ok=True)
        (iglue / path).write_text(json.dumps(line) + "\n")
    image = encode_image(np.ones((2, 2048)), np.array([[0, 0, 5, 5], [1, 1, 4, 4]]), 10, 10)
    for path, ids in (("flickr30k/features/flickr30k_boxes36.lmdb", ["1"]),
                      ("nlvr2/features/nlvr2-train_boxes36.lmdb", ["train-1-0-img0", "train-1-0-img1"])):
        (iglue / path).parent.mkdir(parents=True, exist_ok=True)
        write_store(str(iglue / path), {i: image for i in ids})
    raw = yaml.safe_load((SPACES / "multimodal_nli.yaml").read_text())
    assert raw["target_tasks"] == ["xvnli", "marvl"]
    assert raw["intermediate_tasks"] == ["none", "mnli", "anli_plus", "squad_v1"]
    config = parse_config({**raw, "data_dir": str(tmp_path / "data"), "intermediate_tasks": ["none"]})
    assert config.seeds == 3 and config.search.scheduler == "fifo" and config.resources.use_gpu
    shutil.rmtree(iglue / "nlvr2/features")
    with pytest.raises(ConfigError, match="nlvr2-train_boxes36.lmdb"):  # a missing store is caught before any trial
        parse_config({**raw, "data_dir": str(tmp_path / "data"), "intermediate_tasks": ["none"]})
