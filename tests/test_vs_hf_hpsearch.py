"""benchmarks/vs_hf_hpsearch.py's pieces: the reach accounting on hand-made search logs, the HF
side's data (the project's own features, batched by its collate), its define-by-run space, and
a two-trial HF `hyperparameter_search` on a tiny model that must train phase 2 again for every
trial (no full benchmark here)."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("vs_hf_hpsearch", ROOT / "benchmarks" / "vs_hf_hpsearch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


vs = _load()


def test_reach_and_compare_on_hand_made_logs():
    ours = vs.SearchLog(epochs=[1, 2, 3, 4, 5, 6], finals=[(3.5, 60.0), (6.0, 70.0)], trials=2)
    theirs = vs.SearchLog(epochs=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], finals=[(4.0, 65.0), (10.0, 68.0)], trials=2)
    assert (ours.best, theirs.best) == (70.0, 68.0)
    assert vs.reach(ours, 68.0) == (6.0, 6) and vs.reach(theirs, 65.0) == (4.0, 4)
    assert vs.reach(theirs, 69.0) == (math.inf, 10)  # never reached: everything it spent
    row = vs.compare(ours, theirs)  # the level both reach: the lower best, 68
    assert row["level"] == 68.0 and row["ours"] == (6.0, 6) and row["theirs"] == (10.0, 10)
    assert row["wall_ratio"] == pytest.approx(10 / 6) and row["epoch_ratio"] == pytest.approx(10 / 6)


def test_space_is_conditional_like_the_study():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        args = vs.hp_space(trial)
        assert set(args) == {"learning_rate"} and args["learning_rate"] in vs.TARGET_LRS
        assert ("intermediate_lr" in trial.params) == (trial.params["intermediate_task"] != "none")
        seen.add(trial.params["intermediate_task"])
        study.tell(trial, 0.0)
    assert seen == set(vs.INTERMEDIATES)


def test_study_config_is_a_valid_study(tmp_path, tokenizer_dir):
    from xstilts.study.config import parse_config

    config = parse_config(vs.study_config("vs-hf-test", tokenizer_dir, tmp_path, vs.Settings()), "test")
    assert config.target_tasks == (vs.TARGET,) and tuple(config.intermediate_tasks) == vs.INTERMEDIATES
    assert config.search.scheduler == "asha" and config.num_samples == 4  # the study's default search
    assert (config.training.intermediate_epochs, config.training.target_epochs) == (2, 4)


def test_hf_search_trains_phase_2_for_every_trial(tmp_path, tokenizer_dir, one_thread, monkeypatch):
    from transformers import AutoTokenizer

    from xstilts.tasks.modeling import collate

    settings = vs.Settings(num_samples=2, intermediate_epochs=1, target_epochs=1, max_train_examples=48,
                           max_eval_examples=32)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    task, train, dev, examples = vs.task_data(vs.TARGET, tokenizer, settings)
    assert (len(train), len(dev), len(examples)) == (48, 32, 32)
    rows = [train[i] for i in range(4)]
    batch = vs.collator(tokenizer.pad_token_id)(rows)
    from xstilts.tasks.modeling import Features

    expected = collate([Features(**row) for row in rows], tokenizer.pad_token_id)
    assert set(batch) == set(expected) and all((batch[k] == expected[k]).all() for k in batch)

    monkeypatch.setattr(vs, "INTERMEDIATES", ("synthetic_mnli",))  # every trial wants a phase 2
    log = vs.run_hf(tokenizer_dir, tmp_path, settings)
    assert log.trials == 2 and log.phase2_trainings == 2  # no cache: trained again for the second trial
    assert len(log.epochs) == 2 * (settings.intermediate_epochs + settings.target_epochs)
    assert len(log.finals) == 2 and all(0.0 <= dev <= 100.0 for _, dev in log.finals)
    assert log.epochs == sorted(log.epochs) and log.finals[-1][0] <= log.wall
    assert dataclasses.asdict(log)["stopped"] == 0  # Optuna's MedianPruner waits for 5 finished trials


def test_a_trial_optuna_pruned_is_not_a_final_score():
    """HF ends a pruned trial's training (on_train_end) before raising TrialPruned."""
    log = vs.SearchLog()
    vs.record_trial_end(log, 10.0, 80.0, 4.0, 4)
    vs.record_trial_end(log, 12.0, 55.0, 2.0, 4)  # pruned after 2 of 4 epochs
    assert (log.trials, log.stopped, log.finals) == (2, 1, [(10.0, 80.0)])


def test_accuracy_follows_the_labels_the_trainer_returns():
    import numpy as np
    from transformers import EvalPrediction

    from xstilts.tasks import get_task

    task = get_task(vs.TARGET)
    logits = np.eye(3)[[0, 1, 2, 0]]  # argmax 0, 1, 2, 0
    metric = vs.accuracy_metric(task)
    assert metric(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 1, 0])))["accuracy"] == 75.0
    # Another evaluation order of the same pairs scores the same (no dependence on the dev file's order).
    assert metric(EvalPrediction(predictions=logits[::-1], label_ids=np.array([0, 1, 1, 0])[::-1]))["accuracy"] == 75.0


def test_study_log_counts_phase_2_only_where_it_was_trained(tmp_path):
    """Read back from a real MLflow store: a trial whose phase 2 came from the cache shows its
    trainer's phase-2 metrics (copied once), which are not epochs it trained."""
    import time

    from mlflow.tracking import MlflowClient

    from xstilts.tasks.record_schema import (EPOCH_EN_DEV, FINAL_EN_DEV, INTERMEDIATE_PREFIX, METRIC_PHASE_CACHE_HIT,
                                             TAG_KIND)

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("vs")
    started = time.time()
    for hit in (0.0, 1.0):  # the trial that trained phase 2 (2 epochs), then one that read it from the cache
        run = client.create_run(experiment, tags={TAG_KIND: "trial"}).info.run_id
        client.log_metric(run, METRIC_PHASE_CACHE_HIT, hit)
        for step in ((0,) if hit else (1, 2)):
            client.log_metric(run, INTERMEDIATE_PREFIX + "train_seconds", 1.0, step=step)
        for epoch in (1, 2, 3):
            client.log_metric(run, EPOCH_EN_DEV, 50.0 + epoch, step=epoch)
        client.log_metric(run, FINAL_EN_DEV, 53.0, step=3)
    log = vs.study_log(uri, "vs", started)
    assert (log.trials, log.phase2_trainings, len(log.epochs), log.stopped, len(log.finals)) == (2, 1, 8, 0, 2)
