"""Alignment robustness (`xstilts align`, xstilts.analysis.alignment): the scores on hand-made
embeddings whose alignment is known, the grouping by family and distance, the paired bootstrap
against its normal approximation, and a tiny real study measured, logged and reported."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from xstilts.analysis.alignment import (NOT_RESOLVED, add_encoder, add_scores, alignment_tables, changes,
                                        group_languages, new_result, paired_bootstrap, parallel_pairs, score_pairs,
                                        summarize_pairs)
from xstilts.tasks.base import RetrievalCorpus
from xstilts.tasks.record_schema import ALIGN_ACCURACY, ALIGN_BASE, ALIGN_COSINE_GAP, align_encoder, align_metric


def _embeddings(n: int = 40, dim: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_identical_embeddings_align_fully_and_shuffled_ones_at_chance():
    e = _embeddings()
    n = len(e)
    same = summarize_pairs(score_pairs(e, e.copy()))
    assert same[ALIGN_ACCURACY] == 100.0 and same["chance"] == pytest.approx(100 / n)
    off_diagonal = [_cos(e[i], e[j]) for i in range(n) for j in range(n) if i != j]
    assert same[ALIGN_COSINE_GAP] == pytest.approx(1.0 - np.mean(off_diagonal))  # parallel cos 1 minus the rest

    # Shifted by one: every sentence's nearest candidate is the wrong one (its own embedding).
    shifted = summarize_pairs(score_pairs(e, np.roll(e, -1, axis=0)))
    assert shifted[ALIGN_ACCURACY] == 0.0
    assert abs(shifted[ALIGN_COSINE_GAP]) < 0.1 * same[ALIGN_COSINE_GAP]
    # A random shuffle: hits are exactly its fixed points, chance in expectation.
    permutation = np.random.default_rng(1).permutation(n)
    scored = score_pairs(e, e[permutation])
    assert list(np.flatnonzero(scored["hits"])) == list(np.flatnonzero(permutation == np.arange(n)))
    # The gap is the mean parallel cosine minus the mean non-parallel cosine, by definition.
    x = e[permutation]
    parallel = np.mean([_cos(e[i], x[i]) for i in range(n)])
    other = np.mean([_cos(e[i], x[j]) for i in range(n) for j in range(n) if i != j])
    assert scored["gaps"].mean() == pytest.approx(parallel - other)


def test_accuracy_is_tatoebas_english_to_language_search_and_ties_are_misses():
    from xstilts.tasks.retrieval import tatoeba_scores

    e, x = _embeddings(seed=2), _embeddings(seed=3)
    x[:10] = e[:10] + 0.3 * x[:10]  # ten pairs close, the rest unrelated
    ids = tuple(str(i) for i in range(len(e)))
    corpus = RetrievalCorpus(ids, tuple(f"x{i}" for i in ids), ids, tuple(f"e{i}" for i in ids), tuple((i, i) for i in ids))
    ours = summarize_pairs(score_pairs(e, x))[ALIGN_ACCURACY]
    assert ours >= 25.0
    assert ours == pytest.approx(tatoeba_scores(corpus, torch.tensor(x), torch.tensor(e), direction="en-xx")["accuracy"])
    tied = x.copy()
    tied[1] = tied[0]  # two identical candidates: the first English sentence cannot tell them apart
    assert not score_pairs(e, tied)["hits"][0]


def test_parallel_pairs_keep_gold_pairs_without_duplicates():
    corpus = RetrievalCorpus(("s1", "s2", "s3", "s4"), ("hallo", "welt", "hallo", "baum"),
                             ("e1", "e2", "e3", "e4", "e5"), ("hello", "world", "hi", "tree", "distractor"),
                             (("s1", "e1"), ("s2", "e2"), ("s3", "e3"), ("s4", "e4")))
    english, other = parallel_pairs(corpus)
    assert (english, other) == (["hello", "world", "tree"], ["hallo", "welt", "baum"])  # s3 repeats "hallo"
    assert parallel_pairs(corpus, limit=2) == (["hello", "world"], ["hallo", "welt"])


def test_languages_group_by_distance_and_family():
    languages = ["sw", "de", "ar", "fr", "ru", "he", "yo", "fi", "near", "far", "xx"]
    assert group_languages(languages, "distance") == {
        "close": ["de", "fr", "near"], "medium": ["ru"], "distant": ["sw", "ar", "he", "yo", "fi", "far"],
        "unknown": ["xx"]}
    assert group_languages(languages, "family") == {
        "Afro-Asiatic": ["ar", "he"], "Indo-European": ["de", "fr", "ru"], "Niger-Congo": ["sw", "yo"],
        "Synthetic": ["near", "far"], "Uralic": ["fi"], "unknown": ["xx"]}


def test_paired_bootstrap_matches_its_normal_approximation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1.0, 400), rng.normal(-0.1, 2.0, 900)
    delta, low, high = paired_bootstrap([a], draws=4000)
    half = 1.96 * a.std() / math.sqrt(len(a))
    assert delta == pytest.approx(a.mean()) and low == pytest.approx(a.mean() - half, abs=0.02)
    assert high == pytest.approx(a.mean() + half, abs=0.02)
    # A group: the mean of the languages' means, each resampled on its own.
    delta, low, high = paired_bootstrap([a, b], draws=4000)
    half = 1.96 * math.sqrt(a.var() / len(a) + b.var() / len(b)) / 2
    assert delta == pytest.approx((a.mean() + b.mean()) / 2)
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert paired_bootstrap([np.full(50, 2.5)]) == (2.5, 2.5, 2.5)  # no spread: a zero-width interval


def test_changes_per_group_resolve_a_real_gain_and_not_a_null_one():
    rng = np.random.default_rng(4)
    result = new_result("hand-made", "tatoeba", "dev", 8, 100)
    add_encoder(result, ALIGN_BASE, ALIGN_BASE, "none (pretrained)", None)
    add_encoder(result, "aligned", "mnli", "mnli", None, 1e-5)
    add_encoder(result, "same", "qqp", "qqp", None, 1e-5)
    for language in ("de", "fr", "sw"):
        e, x = rng.normal(size=(60, 16)), rng.normal(size=(60, 16))
        add_scores(result, ALIGN_BASE, language, score_pairs(e, x))  # unrelated: no alignment
        add_scores(result, "aligned", language, score_pairs(e, e + 0.1 * x))  # translations next to each other
        add_scores(result, "same", language, score_pairs(e, x))  # unchanged
    rows = {(r.group, r.encoder, r.score): r for r in changes(result, "distance", draws=1000)}
    gain = rows[("close", "aligned", ALIGN_ACCURACY)]
    assert gain.languages == ("de", "fr") and gain.pairs == 120 and gain.after == 100.0
    assert gain.delta == pytest.approx(gain.after - gain.before) and gain.low > 0 and gain.verdict == "better aligned"
    assert rows[("distant", "aligned", ALIGN_COSINE_GAP)].resolved
    null = rows[("distant", "same", ALIGN_ACCURACY)]
    assert null.delta == 0.0 and (null.low, null.high) == (0.0, 0.0) and null.verdict == NOT_RESOLVED
    family = {(r.group, r.encoder) for r in changes(result, "family", draws=100)}
    assert family == {(g, e) for g in ("Indo-European", "Niger-Congo") for e in ("aligned", "same")}
    text = "\n".join(table.text() for table in alignment_tables(result, draws=200))
    assert "Alignment with English by language family" in text and NOT_RESOLVED in text and "better aligned" in text


def test_record_names():
    assert align_encoder("none") == ALIGN_BASE
    assert align_encoder("xnli@de", 1e-5) == "xnli_de_lr1e-05" and align_encoder("mnli", 0.001, 2) == "mnli_lr0.001_seed2"
    assert align_metric("mnli_lr0.001", "sw", ALIGN_ACCURACY) == "align/mnli_lr0.001/sw/accuracy"


# --- a tiny real study: run, align, report ---------------------------------------------------------

def _cli(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xstilts.study.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.e2e
def test_align_a_tiny_study_logs_a_nested_run_and_the_report_shows_it(tmp_path, tokenizer_dir, monkeypatch, capsys,
                                                                     one_thread):
    """One trial (synthetic MNLI for a few steps, then the synthetic Tatoeba-like retrieval target,
    which has no phase 3) on the tests' tiny XLM-R folder (the embedded default's architecture
    without its MLM pre-training, which would cost most of the budget), then `xstilts align` and
    `xstilts report` in this process."""
    import yaml
    from mlflow.tracking import MlflowClient

    from xstilts.analysis.records import find_study, iter_trials
    from xstilts.study.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {
        "name": "align-e2e", "model": str(tokenizer_dir), "target_tasks": ["synthetic_tatoeba"],
        "intermediate_tasks": ["synthetic_mnli"],
        "search_space": {"intermediate_lr": {"type": "choice", "values": [0.001]},
                         "target_lr": {"type": "choice", "values": [0.001]}},
        "search": {"scheduler": "fifo"}, "num_samples": 1, "max_concurrent_trials": 1,
        "resources": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1},
        "training": {"batch_size": 16, "intermediate_epochs": 1, "target_epochs": 1, "max_train_examples": 64,
                     "max_eval_examples": 120},
        "mlflow": {"tracking_uri": uri}, "storage_path": str(tmp_path / "runs")}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    run = _cli(tmp_path, "run", "--config", "study.yaml", "--name", "align-e2e")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    monkeypatch.chdir(tmp_path)

    # Bad input: one line naming the field, exit 2, nothing logged.
    for args, field in ((["--study", "nope"], "--study"), (["--pairs", "1"], "--pairs"), (["--task", "synthetic_xnli"], "--task"),
                        (["--languages", "de"], "--languages"), (["--layer", "7"], "--layer")):
        assert main(["align", "--tracking-uri", uri, *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"xstilts align: error: {field}"), (args, err)

    assert main(["align", "--study", "align-e2e", "--tracking-uri", uri, "--pairs", "120"]) == 0
    printed = capsys.readouterr().out
    assert "synthetic_tatoeba (dev)" in printed and "Alignment with English by distance from English" in printed

    study = find_study(uri, "xstilts", "align-e2e")
    (trial,) = iter_trials(study)  # the nested alignment run is not a trial
    client = MlflowClient(uri)
    aligned = client.search_runs([study.experiment_id], "tags.`xstilts.run_kind` = 'align'")
    assert len(aligned) == 1 and aligned[0].data.tags["mlflow.parentRunId"] == study.run_id
    metrics = aligned[0].data.metrics
    encoder = align_encoder("synthetic_mnli", 0.001)
    for name in (ALIGN_BASE, encoder):
        for language in ("near", "mid", "far"):
            assert 0.0 <= metrics[align_metric(name, language, ALIGN_ACCURACY)] <= 100.0
            assert -2.0 <= metrics[align_metric(name, language, ALIGN_COSINE_GAP)] <= 2.0
    assert aligned[0].data.params["align_task"] == "synthetic_tatoeba" and aligned[0].data.params["align_layer"] == "2"
    # The trial scored the same 120 pairs with the same phase-2 encoder and layer (Tatoeba, en -> xx).
    for language in ("near", "mid", "far"):
        assert metrics[align_metric(encoder, language, ALIGN_ACCURACY)] == pytest.approx(
            trial.metrics[f"final/dev/{language}/accuracy"])

    assert main(["report", "--study", "align-e2e", "--tracking-uri", uri, "--out", str(tmp_path / "report"), "--no-log"]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    section = markdown.split("## Gains by language family and distance from English", 1)[1].split("\n## ", 1)[0]
    for row in ("| close | near | synthetic_mnli | 120 |", "| medium | mid | synthetic_mnli | 120 |",
                "| distant | far | synthetic_mnli | 120 |", "| Synthetic | near mid far | synthetic_mnli | 360 |"):
        assert row in section
    base_near = metrics[align_metric(ALIGN_BASE, "near", ALIGN_ACCURACY)]
    assert f"| near | Synthetic | close | 120 | {base_near:.1f} |" in section
    assert "95% interval" in section and "Alignment with English per language" in markdown
