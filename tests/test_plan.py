"""`xstilts plan`: what a study would run, from a real config, without running or writing anything."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from xstilts.study.config import DEFAULT_CONFIG


def _config(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(name="planned", num_samples=3, target_tasks=["synthetic_xnli", "synthetic_panx"],
               intermediate_tasks=["none", "synthetic_mnli", "synthetic_qqp"], storage_path=str(tmp_path / "store"),
               search_space={"intermediate_lr": {"type": "choice", "values": [0.001, 0.0003]},
                             "target_lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}})
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    raw["training"].update(max_train_examples=200, target_epochs=2, intermediate_epochs=1)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _plan(capsys, *args) -> dict:
    from xstilts.study.cli import main

    assert main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_prints_the_study_and_writes_nothing(tmp_path):
    config = _config(tmp_path)
    result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "plan", "--config", str(config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "trials: 6 (2 target task(s)" in out
    assert "synthetic_xnli (classification): 3 trials; phase 3: 2 epoch(s) on 200 examples" in out
    assert "phase-2 trainings: 4 distinct, 0 already in the phase cache, 4 to train" in out
    assert "resources per trial: 1 Ray Train worker(s) x 1 CPU" in out
    assert "not built yet" in out and "rate: unknown" in out  # honest about what it cannot know yet
    assert sorted(os.listdir(tmp_path)) == ["study.yaml"]  # no storage folder, no MLflow store


def test_plan_reports_cached_phase2_trainings_and_a_measured_rate(tmp_path, capsys):
    import ray

    from xstilts.tasks import get_task
    from xstilts.trainables.embedded_model import ensure_embedded_model
    from xstilts.trainables.phase_cache import PhaseCache

    config = _config(tmp_path)
    ensure_embedded_model(tmp_path / "store" / "embedded_models", log=lambda *_: None)  # as a first study would
    plan = _plan(capsys, "--config", str(config))
    assert plan["trials"] == 6 and plan["model_exists"]
    trainings = plan["phase2_trainings"]
    assert {(t["intermediate_task"], t["intermediate_lr"]) for t in trainings} == {
        ("synthetic_mnli", 0.001), ("synthetic_mnli", 0.0003), ("synthetic_qqp", 0.001), ("synthetic_qqp", 0.0003)}
    assert all(t["key"] and not t["cached"] and t["examples"] == 200 for t in trainings)
    cost = plan["cost"]
    assert cost["rate_source"].startswith("measured now") and cost["target_tokens_per_s"] > 0
    length = get_task("synthetic_mnli").max_length  # no training.max_length: the task's own
    assert cost["phase2_max_tokens"] == 4 * 200 * 1 * length and cost["worker_hours_upper_bound"] > 0
    assert plan["resources_per_trial"]["cpus"] == 1 and plan["peak_resources"]["trials"] == 2

    # One phase-2 training in the phase cache under the key plan computed: reported as cached.
    entry = tmp_path / "encoder"
    entry.mkdir()
    (entry / "config.json").write_text("{}")
    cached = trainings[0]
    PhaseCache(tmp_path / "store" / "phase_cache").store(cached["key"], entry, {"trained_by_trial": "t"})
    again = _plan(capsys, "--config", str(config))
    states = {t["key"]: t["cached"] for t in again["phase2_trainings"]}
    assert states[cached["key"]] and sum(states.values()) == 1 and again["phase2_cached"] == 1
    assert again["cost"]["phase2_max_tokens"] == 3 * 200 * length  # a cached training costs nothing
    assert not ray.is_initialized()

    # `seeds: 2` (fifo): every configuration trains twice, and each seed has its own phase 2
    raw = yaml.safe_load(config.read_text())
    raw.update(seeds=2, search={**raw.get("search", {}), "scheduler": "fifo"})
    config.write_text(yaml.safe_dump(raw))
    seeded = _plan(capsys, "--config", str(config))
    assert seeded["trials"] == 12 and [t["trials"] for t in seeded["targets"]] == [6, 6]
    by_seed = {(t["intermediate_task"], t["intermediate_lr"], t["seed"]): t["key"] for t in seeded["phase2_trainings"]}
    assert len(by_seed) == 8 and len(set(by_seed.values())) == 8
    assert by_seed[("synthetic_mnli", 0.001, raw["seed"])] == next(
        t["key"] for t in trainings if (t["intermediate_task"], t["intermediate_lr"]) == ("synthetic_mnli", 0.001))


def test_plan_of_a_bad_config_is_one_line_and_exit_2(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["num_samples"] = 0
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "xstilts.study.cli", "plan", "--config", "bad.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "num_samples" in result.stderr, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml"]
