"""A 2-trial slice of search_spaces/mini_xtreme_real.yaml: the real multilingual encoder
(multilingual-e5-small, a BERT-architecture model with the XLM-R tokenizer) on the real samples.

Slow, and skipped unless the model folder exists (build it with xstilts build-model me5-small;
XSTILTS_ME5_PATH, default ../models/me5-small beside the repository) and ../shared/data is there.
It runs the study's own config through `xstilts run`, cut down only in size.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MODEL = Path(os.environ.get("XSTILTS_ME5_PATH", ROOT.parent / "models" / "me5-small"))
DATA = ROOT.parent / "shared" / "data"

pytestmark = [
    pytest.mark.e2e, pytest.mark.slow,
    pytest.mark.skipif(not (MODEL / "config.json").exists(),
                       reason=f"no multilingual-e5-small folder at {MODEL} (build it with xstilts build-model me5-small)"),
    pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent (a fresh clone without the shared samples)"),
]


def test_two_trial_slice_of_the_real_study(tmp_path):
    from mlflow.tracking import MlflowClient

    config = yaml.safe_load((ROOT / "search_spaces" / "mini_xtreme_real.yaml").read_text())
    config.update(
        name="mini-slice", model=str(MODEL), data_dir=str(DATA), target_tasks=["xnli"],
        intermediate_tasks=["none", "qqp"], num_samples=2, max_concurrent_trials=1,
        storage_path=str(tmp_path / "runs"),
        mlflow={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "mini-slice"},
    )
    config["search_space"].pop("retrieval_layer", None)
    config["training"].update(max_train_examples=64, intermediate_max_train_examples=64, max_eval_examples=32, intermediate_epochs=1, target_epochs=1)
    path = tmp_path / "slice.yaml"
    path.write_text(yaml.safe_dump(config))
    # Ray's socket paths must stay under 107 bytes: a short temp dir, not the test's tmp_path.
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-me5-", dir="/tmp")}
    done = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "run", "--config", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(config["mlflow"]["tracking_uri"])
    experiment = client.get_experiment_by_name("mini-slice")
    trials = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["intermediate_task"] for r in trials) == ["none", "qqp"]
    for run in trials:
        assert run.info.status == "FINISHED", run.data.tags.get("xstilts.error")
        scored = {k.split("/")[2] for k in run.data.metrics if k.startswith("final/dev/")}
        assert {"en", "de", "zh"} <= scored  # English dev plus zero-shot languages of the samples
        assert run.data.params["model"] == str(MODEL)
    qqp = next(r for r in trials if r.data.params["intermediate_task"] == "qqp")
    assert qqp.data.tags["xstilts.phase_cache"] == "miss"
    # QQP's sample has no dev split: it validated on a held-out slice of its training data.
    assert "intermediate/dev/en/accuracy" in qqp.data.metrics
