"""The parts of a training phase run without Ray (xstilts.trainables.train_loop with a local
runtime): the whole phase reports once per epoch, a saved state restores to the same weights and
optimiser, one epoch moves the weights, evaluation returns the task's metric."""
from __future__ import annotations

import dataclasses
import json

import torch
from transformers import AutoTokenizer

from xstilts.tasks.record_schema import EPOCH_EN_DEV, FINAL_ALL_LANGUAGES, TARGET_EPOCH, final_dev
from xstilts.trainables.config import PhaseConfig, TrainingOptions
from xstilts.trainables.phase_data import load_phase_data
from xstilts.trainables.train_loop import (TRAIN_STATE, TrainState, build_model, epoch_plan, evaluate_epoch,
                                           early_stopping_update, local_runtime, run_phase, save_checkpoint,
                                           train_epoch)


def _phase(model_dir, tmp_path, epochs=2) -> PhaseConfig:
    return PhaseConfig(phase="target", task="synthetic_xnli", init_path=model_dir, tokenizer_path=model_dir,
                       learning_rate=1e-3, epochs=epochs, seed=0,
                       training=TrainingOptions(batch_size=16, max_train_examples=64, max_eval_examples=32),
                       feature_cache_dir=str(tmp_path / "features"))


def test_a_phase_runs_and_reports_without_ray(tokenizer_dir, tmp_path, one_thread):
    runtime, reports = local_runtime(keep_checkpoints=str(tmp_path / "kept"))
    run_phase(_phase(tokenizer_dir, tmp_path), runtime)
    assert [m[TARGET_EPOCH] for m, _ in reports] == [1, 2]
    last, folder = reports[-1]
    assert 0 <= last[EPOCH_EN_DEV] <= 100 and FINAL_ALL_LANGUAGES in last and final_dev("far", "accuracy") in last
    assert (tmp_path / "kept" / "epoch-2" / "config.json").exists()  # the last epoch's save_pretrained model
    assert json.loads((tmp_path / "kept" / "epoch-2" / "config.json").read_text())["id2label"]


def test_parts_epoch_state_and_evaluation(tokenizer_dir, tmp_path, one_thread):
    cfg = _phase(tokenizer_dir, tmp_path, epochs=3)
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, early_stopping_patience=2))
    runtime, _ = local_runtime()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = load_phase_data(cfg, tokenizer)
    assert [s.name for s in data.sources] == ["synthetic_xnli@en"] and set(data.dev_sets) == {"synthetic_xnli"}
    plan = epoch_plan(cfg, data.sources, 0, 0, 1)
    assert sum(len(indices) for _, indices in plan) == 64 and plan == epoch_plan(cfg, data.sources, 0, 0, 1)
    model, _ = build_model(cfg, data)
    state = TrainState.create(cfg, model, len(plan))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measured = train_epoch(model, state, data, cfg, runtime, tokenizer, 0, torch.Generator().manual_seed(0))
    assert measured["epoch"] == 1 and measured["train_loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    dev, selection = evaluate_epoch(model, data, cfg, tokenizer, "cpu")
    assert dev["dev/en/accuracy"] == selection
    assert not early_stopping_update(state.stopping, selection, 0, cfg.training, model)  # the first best epoch

    folder = save_checkpoint(model, tokenizer, data, cfg, state, epoch=0, last=False)
    restored_model, _ = build_model(cfg, data)
    restored = TrainState.create(cfg, restored_model, len(plan))
    restored.restore(torch.load(f"{folder}/{TRAIN_STATE}", weights_only=True), restored_model, cfg.epochs)
    assert restored.start_epoch == 1
    assert (restored.stopping["best_score"], restored.stopping["best_epoch"]) == (selection, 0)
    assert all(torch.equal(v, restored.stopping["best_model"][k]) for k, v in state.stopping["best_model"].items())
    assert all(torch.equal(v, restored_model.state_dict()[k]) for k, v in model.state_dict().items())
    assert restored.scheduler.state_dict() == state.scheduler.state_dict()
    assert restored.optimizer.state_dict()["state"].keys() == state.optimizer.state_dict()["state"].keys()
