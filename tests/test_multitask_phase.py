"""Multi-task phase 2 (one head per task on a shared encoder, MLM auxiliary loss), per-language
sources, held-out validation subsets, early stopping, and DDP with 2 Ray Train workers."""
from __future__ import annotations

import collections
import dataclasses
import json
import os

import pytest
import torch

from xstilts.tasks import DataOptions, get_task
from xstilts.tasks.mixture import TaskMixture, sampling_probabilities
from xstilts.trainables.config import PhaseConfig, TrainingOptions
from xstilts.trainables.multitask import (MLM_HEAD, build_multitask_model, load_mlm_corpus, mask_tokens, mixture_steps)
from xstilts.trainables.phase_data import Source as _Source, holdout_size as _holdout_size
from xstilts.trainables.train_loop import early_stopping_update as _early_stopping_update


@pytest.fixture(scope="module")
def model_dir(tokenizer_dir):
    return tokenizer_dir  # the tiny embedded model (an XLM-R MLM with its LM head)


def test_heads_share_one_encoder_and_the_lm_head_follows_its_embeddings(model_dir, one_thread):
    tasks = [get_task("synthetic_mnli"), get_task("synthetic_panx")]
    model = build_multitask_model(tasks, model_dir, with_mlm=True)
    nli, ner, mlm = model.head("synthetic_mnli"), model.head("synthetic_panx"), model.head(MLM_HEAD)
    assert nli.base_model is ner.base_model is model.encoder
    assert mlm.get_input_embeddings() is model.encoder.get_input_embeddings()
    assert mlm.get_output_embeddings().weight.data_ptr() == model.encoder.get_input_embeddings().weight.data_ptr()
    # Each shared tensor is one parameter of the whole model (the optimizer steps it once).
    names = dict(model.named_parameters())
    assert len({p.data_ptr() for p in names.values()}) == len(names)

    before = model.encoder.encoder.layer[0].attention.self.query.weight.detach().clone()
    ids = torch.tensor([[0, 10, 11, 12, 2]])
    output = model("synthetic_mnli", input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([1]),
                   mlm_batch={"input_ids": ids, "attention_mask": torch.ones_like(ids),
                              "labels": torch.tensor([[-100, 10, -100, -100, -100]])}, mlm_weight=0.5)
    assert output.mlm_loss is not None and torch.isclose(
        output.loss, nli(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([1])).loss
        + 0.5 * output.mlm_loss)
    output.loss.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    after = ner.base_model.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(before, after), "a step on the NLI head must move the encoder the NER head reads"


def test_mixture_steps_follow_the_sampling_probabilities():
    counts = {"a@en": 400, "b@en": 100, "a@de": 25}
    for sampling, temperature in (("proportional", 1.0), ("temperature", 3.0)):
        steps = mixture_steps(counts, sampling, temperature, seed=0, epoch=0)
        assert len(steps) == sum(counts.values())  # an epoch is as many steps as all sources have batches
        assert steps == mixture_steps(counts, sampling, temperature, seed=0, epoch=0)  # deterministic
        assert steps != mixture_steps(counts, sampling, temperature, seed=0, epoch=1)  # reshuffled per epoch
        drawn = collections.Counter(name for name, _ in steps)
        expected = sampling_probabilities(TaskMixture(tuple(counts), sampling, temperature), counts)
        for name, p in expected.items():
            assert abs(drawn[name] / len(steps) - p) < 0.04, (sampling, name, drawn[name] / len(steps), p)
        # Within a source, batches are walked without repeats until all were used.
        a_de = [index for name, index in steps if name == "a@de"]
        first = a_de[:counts["a@de"]]
        assert len(set(first)) == len(first)
    assert mixture_steps({"only@en": 3}, "temperature", 2.0, 0, 0) == [("only@en", 0), ("only@en", 1), ("only@en", 2)]


def test_mask_tokens_masks_only_real_tokens(tokenizer):
    lines = load_mlm_corpus("synthetic", 64, seed=0)
    assert len(lines) == 64 and len({l for l in lines}) > 50
    encoded = tokenizer(lines, padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(encoded["input_ids"], encoded["attention_mask"], tokenizer, 0.15, generator)
    chosen = labels != -100
    special = torch.zeros_like(chosen)
    for token_id in tokenizer.all_special_ids:
        special |= encoded["input_ids"] == token_id
    assert not (chosen & special).any() and not (chosen & (encoded["attention_mask"] == 0)).any()
    assert torch.equal(labels[chosen], encoded["input_ids"][chosen])
    real = (~special & (encoded["attention_mask"] == 1)).sum().item()
    assert 0.10 < chosen.sum().item() / real < 0.20
    masked = (inputs == tokenizer.mask_token_id) & chosen
    assert 0.65 < masked.sum().item() / chosen.sum().item() < 0.95
    assert torch.equal(inputs[~chosen], encoded["input_ids"][~chosen])  # the rest is untouched


def test_mlm_corpus_file_errors_name_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="training.mlm_corpus"):
        load_mlm_corpus(str(tmp_path / "missing.txt"), None, 0)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="training.mlm_corpus"):
        load_mlm_corpus(str(empty), None, 0)
    text = tmp_path / "text.txt"
    text.write_text("eins zwei\n\nun deux\none two\n")
    assert sorted(load_mlm_corpus(str(text), None, 0)) == ["eins zwei", "one two", "un deux"]


def test_early_stopping_keeps_the_best_epoch():
    model = torch.nn.Linear(2, 1)
    opts = TrainingOptions(early_stopping_patience=2)
    state = {"best_score": None, "best_epoch": None, "bad_epochs": 0, "best_model": None}
    stops = []
    for epoch, score in enumerate([50.0, 60.0, 59.0, 60.0, 58.0]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        stops.append(_early_stopping_update(state, score, epoch, opts, model))
    assert stops == [False, False, False, True, True] and state["best_epoch"] == 1
    assert torch.all(state["best_model"]["weight"] == 1)  # the weights of epoch 1, not a later one
    assert not _early_stopping_update({"best_score": None}, 1.0, 0, TrainingOptions(), model)  # off by default


@pytest.mark.shared_data
def test_a_task_without_english_dev_holds_out_part_of_its_training_split(tokenizer, tokenizer_dir):
    data = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
    if not os.path.isdir(os.path.join(data, "qqp")):
        pytest.skip("../shared/data/qqp is absent (a fresh clone without the shared samples)")
    qqp = get_task("qqp")
    options = DataOptions(data, 300, 0)
    assert not qqp.has_data("dev", "en", options)  # the shared sample is a train slice only
    cfg = PhaseConfig(phase="intermediate", task="qqp", init_path=tokenizer_dir, tokenizer_path=tokenizer_dir,
                      learning_rate=1e-3, epochs=1, seed=0, training=TrainingOptions(max_eval_examples=20))
    size = _holdout_size(qqp, "en", options, options, cfg)
    assert size == 20  # 10 % of 300 is 30, capped by max_eval_examples
    source = _Source(qqp, "en", options, tokenizer, cfg, holdout=size)
    everything = qqp.load("train", "en", options)
    assert source.held_out == everything[-20:] and source.examples() == everything[:-20]
    assert len(source.features) == 280
    # A per-task evaluation cap is the task's own (and only its own) cap on the held-out subset.
    by_task = dataclasses.replace(cfg, training=TrainingOptions(max_eval_examples=20,
                                                                max_eval_examples_by_task={"qqp": 12, "pawsx": 500}))
    assert _holdout_size(qqp, "en", options, options, by_task) == 12
    # A task with its own English dev split holds nothing out (synthetic tasks always have one).
    assert _holdout_size(get_task("synthetic_mnli"), "en", options, options, cfg) == 0


@pytest.mark.e2e
def test_mixture_phase_with_mlm_on_two_ddp_workers(tmp_path, monkeypatch):
    """Phase 2 on a 3-source mixture + MLM, embeddings frozen, DDP over 2 Ray Train workers."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer
    from transformers import AutoModel

    from xstilts.trainables.embedded_model import EmbeddedModelSpec, ensure_embedded_model
    from xstilts.trainables.train_loop import ENCODER_DIR, PROGRESS_FILE_ENV, train_phase

    model = ensure_embedded_model(tmp_path / "models", EmbeddedModelSpec(mlm_steps=0), log=lambda *a: None)
    progress = tmp_path / "progress.jsonl"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(progress))
    sources = ("synthetic_mnli@en", "synthetic_mnli@near", "synthetic_qqp@en")
    phase = PhaseConfig(
        phase="intermediate", task="synthetic_mnli", init_path=model, tokenizer_path=model, learning_rate=1e-3,
        epochs=2, seed=0, mixture=TaskMixture(sources, "temperature", 2.0),
        # Phase 2 takes its own cap: max_train_examples (phase 3's) would give 1 batch per source.
        # synthetic_qqp alone is capped lower (max_train_examples_by_task): a smaller share of the steps.
        training=TrainingOptions(batch_size=16, max_train_examples=8, intermediate_max_train_examples=240,
                                 max_train_examples_by_task={"synthetic_qqp": 64},
                                 max_eval_examples=64, mlm_weight=0.5,
                                 mlm_corpus="synthetic", freeze_embeddings=True, early_stopping_patience=3),
        feature_cache_dir=str(tmp_path / "features"),
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {PROGRESS_FILE_ENV: str(progress), "TOKENIZERS_PARALLELISM": "false"}})
    try:
        result = TorchTrainer(
            train_phase, train_loop_config=phase.to_dict(),
            scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(name="mixture", storage_path=str(tmp_path / "runs")),
        ).fit()
    finally:
        ray.shutdown()
    assert result.error is None, result.error
    metrics = result.metrics
    assert metrics["intermediate/epoch"] == 2
    # Every source was drawn, and both tasks' English dev sets were scored with their own head.
    steps = {s: metrics[f"intermediate/steps/{s.replace('@', '/')}"] for s in sources}
    assert all(count > 0 for count in steps.values()), steps
    # intermediate_max_train_examples applied: the 8-example cap would allow at most 3 sources x
    # 1 batch x 2 epochs = 6 steps in all.
    assert sum(steps.values()) > 6, steps
    p = {s: metrics[f"intermediate/p/{s.replace('@', '/')}"] for s in sources}
    assert p["synthetic_qqp@en"] < p["synthetic_mnli@en"] and p["synthetic_mnli@en"] == pytest.approx(p["synthetic_mnli@near"]), p
    assert {"intermediate/dev/synthetic_mnli/en/accuracy", "intermediate/dev/synthetic_qqp/en/accuracy"} <= set(metrics)
    assert metrics["intermediate/en_dev_score"] == pytest.approx(
        (metrics["intermediate/dev/synthetic_mnli/en/accuracy"] + metrics["intermediate/dev/synthetic_qqp/en/accuracy"]) / 2)
    assert 0 < metrics["intermediate/mlm_loss"] < 20
    assert 0.5 < metrics["intermediate/train_real_token_fraction"] <= 1  # length-grouped batches pad little
    starts = [json.loads(line) for line in progress.read_text().splitlines() if '"start"' in line]
    assert starts and starts[0]["sources"] == list(sources) and starts[0]["frozen_parameters"] > 0
    # The saved encoder loads alone, with the word embeddings untouched (frozen) and the rest trained.
    with result.checkpoint.as_directory() as directory:
        encoder = AutoModel.from_pretrained(os.path.join(directory, ENCODER_DIR))
    initial = AutoModel.from_pretrained(model)
    assert torch.equal(encoder.get_input_embeddings().weight, initial.get_input_embeddings().weight)
    assert not torch.equal(encoder.encoder.layer[0].attention.self.query.weight,
                           initial.encoder.layer[0].attention.self.query.weight)
