"""Scoring protocols checked by hand: BUCC mined as XTREME's utils_retrieve.py does (ratio margin,
k = 4 in both directions, 1-1 "max" alignment, threshold chosen on dev gold), and CCG scored by
token accuracy (jiant) instead of seqeval chunk F1."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from xstilts.tasks.base import RetrievalCorpus, TaggingExample
from xstilts.tasks.metrics import tagging_prf, token_accuracy
from xstilts.tasks.retrieval import (best_threshold, bucc_candidates, bucc_scores, bucc_split_scores, margin_scores,
                                     mine_pairs)

# ---------------------------------------------------------------------------------------------
# A hand-computed BUCC case, 2-D
#
# sources a = (1, 0), b = (0, 1); targets p = (1, 0), q = (0.6, 0.8), r = (0, 1) (all unit length)
# cosines:  a.p = 1   a.q = 0.6   a.r = 0
#           b.p = 0   b.q = 0.8   b.r = 1
# k = 4 is capped at the other side's size: 3 targets per source, 2 sources per target.
# forward means (over a source's 3 nearest targets):  a: (1 + 0.6 + 0) / 3 = 8/15,  b: (0 + 0.8 + 1) / 3 = 3/5
# backward means (over a target's 2 nearest sources): p: (1 + 0) / 2 = 1/2,  q: (0.6 + 0.8) / 2 = 7/10,  r: 1/2
# ratio margin: cos / ((fwd mean + bwd mean) / 2)
#   a,p: 1   / ((8/15 + 1/2)  / 2) = 1 / (31/60)  = 60/31     a,q: 0.6 / ((8/15 + 7/10) / 2) = 0.6 / (37/60) = 36/37
#   b,q: 0.8 / ((3/5 + 7/10)  / 2) = 0.8 / (13/20) = 16/13    b,r: 1   / ((3/5 + 1/2)  / 2) = 1 / (11/20) = 20/11
#   a,r and b,p: cosine 0, score 0
# mining ("max"): forward bests a->p (60/31), b->r (20/11); backward bests p->a (60/31), q->b (16/13),
# r->b (20/11); by decreasing score a-p, a-p, b-r, b-r, b-q: b-q is skipped (b is aligned already).
# ---------------------------------------------------------------------------------------------

SOURCE = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TARGET = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
HAND = [[60 / 31, 36 / 37, 0.0], [0.0, 16 / 13, 20 / 11]]


def _flat(matrix) -> list[float]:
    return [value for row in matrix.tolist() for value in row]


def test_margin_scores_by_hand():
    hand = [value for row in HAND for value in row]
    assert _flat(margin_scores(SOURCE, TARGET)) == pytest.approx(hand, abs=1e-6)  # float32 0.6, 0.8
    assert _flat(margin_scores(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
                                     torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64))) == pytest.approx(hand, abs=1e-12)
    assert _flat(margin_scores(SOURCE.numpy(), TARGET.numpy(), k=4)) == pytest.approx(hand, abs=1e-6)
    # other lengths, same directions: cosine is scale-free
    assert _flat(margin_scores(3 * SOURCE, 0.5 * TARGET)) == pytest.approx(hand, abs=1e-6)
    assert _flat(margin_scores(SOURCE, TARGET, margin="absolute")) == pytest.approx([1.0, 0.6, 0.0, 0.0, 0.8, 1.0],
                                                                                     abs=1e-6)


def test_mine_pairs_by_hand():
    mined = mine_pairs(SOURCE, TARGET)
    assert [(i, j) for i, j, _ in mined] == [(0, 0), (1, 2)]
    assert [s for _, _, s in mined] == pytest.approx([60 / 31, 20 / 11], abs=1e-6)
    # the other XTREME retrieval modes
    assert [(i, j) for i, j, _ in mine_pairs(SOURCE, TARGET, retrieval="fwd")] == [(0, 0), (1, 2)]
    assert [(i, j) for i, j, _ in mine_pairs(SOURCE, TARGET, retrieval="bwd")] == [(0, 0), (1, 1), (1, 2)]
    assert [(i, j) for i, j, _ in mine_pairs(SOURCE, TARGET, retrieval="intersect")] == [(0, 0), (1, 2)]
    assert mine_pairs(SOURCE[:0], TARGET) == []


# ---------------------------------------------------------------------------------------------
# A hub: unit vectors at angles; sources s1 = 0 deg, s2 = 60 deg; targets t1 = -25 deg (s1's
# translation), h = 20 deg (between both sources: a hub), t2 = 75 deg (s2's translation).
# cos(s1, h) = cos 20 = 0.940 > cos(s1, t1) = cos 25 = 0.906: by cosine s1's best is the hub.
# fwd means: s1 = (cos 25 + cos 20 + cos 75) / 3 = 0.702, s2 = (cos 85 + cos 40 + cos 15) / 3 = 0.606
# bwd means: t1 = (cos 25 + cos 85) / 2 = 0.497, h = (cos 20 + cos 40) / 2 = 0.853, t2 = (cos 75 + cos 15) / 2 = 0.612
# margin(s1, t1) = 0.9063 / ((0.7016 + 0.4967) / 2) = 1.513 > margin(s1, h) = 0.9397 / ((0.7016 + 0.8529) / 2) = 1.209
# margin(s2, t2) = 0.9659 / ((0.6064 + 0.6124) / 2) = 1.585
# ---------------------------------------------------------------------------------------------

def _unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


HUB_SOURCE = torch.tensor([_unit(0), _unit(60)], dtype=torch.float64)
HUB_TARGET = torch.tensor([_unit(-25), _unit(20), _unit(75)], dtype=torch.float64)


def _cos(a: float, b: float) -> float:
    return math.cos(math.radians(a - b))


FWD = {"s1": (_cos(0, -25) + _cos(0, 20) + _cos(0, 75)) / 3, "s2": (_cos(60, -25) + _cos(60, 20) + _cos(60, 75)) / 3}
BWD = {"t1": (_cos(0, -25) + _cos(60, -25)) / 2, "h": (_cos(0, 20) + _cos(60, 20)) / 2, "t2": (_cos(0, 75) + _cos(60, 75)) / 2}
S1_T1 = _cos(0, -25) / ((FWD["s1"] + BWD["t1"]) / 2)  # 1.513
S1_H = _cos(0, 20) / ((FWD["s1"] + BWD["h"]) / 2)  # 1.209
S2_T2 = _cos(60, 75) / ((FWD["s2"] + BWD["t2"]) / 2)  # 1.585


def test_margin_demotes_a_hub():
    cosine = margin_scores(HUB_SOURCE, HUB_TARGET, margin="absolute")
    margin = margin_scores(HUB_SOURCE, HUB_TARGET)
    assert int(cosine[0].argmax()) == 1  # cosine: s1 -> the hub
    assert int(margin[0].argmax()) == 0  # margin: s1 -> t1, its translation
    assert margin[0, 0].item() == pytest.approx(S1_T1) and S1_T1 == pytest.approx(1.513, abs=1e-3)
    assert margin[0, 1].item() == pytest.approx(S1_H) and S1_H == pytest.approx(1.209, abs=1e-3)
    assert [(i, j) for i, j, _ in mine_pairs(HUB_SOURCE, HUB_TARGET)] == [(1, 2), (0, 0)]
    assert [(i, j) for i, j, _ in mine_pairs(HUB_SOURCE, HUB_TARGET, margin="absolute")] == [(1, 2), (0, 1)]


def _corpus(sources, targets, gold) -> RetrievalCorpus:
    return RetrievalCorpus(tuple(sources), tuple(f"text {s}" for s in sources), tuple(targets),
                           tuple(f"text {t}" for t in targets), tuple(gold))


# dev: the hub corpus whose gold says s2-t2 only (s1 has no translation there): mined pairs
# s2-t2 (1.585) and s1-t1 (1.513); the F1-optimal cut keeps s2-t2 alone (F1 1), at the midpoint
# threshold (1.585 + 1.513) / 2 = 1.549.
DEV = _corpus(["s1", "s2"], ["t1", "h", "t2"], [("s2", "t2")])
DEV_THRESHOLD = (S2_T2 + S1_T1) / 2
# test: the 2-D case above with gold a-p and b-q: mined a-p (60/31 = 1.935), b-r (20/11 = 1.818).
TEST = _corpus(["a", "b"], ["p", "q", "r"], [("a", "p"), ("b", "q")])


def test_threshold_chosen_on_dev_gold_is_applied_to_test():
    dev_candidates = bucc_candidates(DEV, HUB_SOURCE, HUB_TARGET)
    assert [(s, t) for s, t, _ in dev_candidates] == [("s2", "t2"), ("s1", "t1")]
    threshold, f1 = best_threshold(dev_candidates, DEV.gold)
    assert threshold == pytest.approx(DEV_THRESHOLD, abs=1e-6) and f1 == pytest.approx(100.0)
    # test: both mined pairs score above 1.549 -> predicted a-p, b-r; right: a-p
    # precision 1/2, recall 1/2, F1 1/2
    scores = bucc_split_scores(TEST, SOURCE, TARGET, dev=(DEV, HUB_SOURCE, HUB_TARGET))
    assert scores == {"f1": pytest.approx(50.0), "precision": pytest.approx(50.0), "recall": pytest.approx(50.0),
                      "threshold": pytest.approx(DEV_THRESHOLD, abs=1e-6)}
    # without dev: the test's own F1-optimal cut keeps a-p alone: P 1, R 1/2, F1 2/3, threshold between
    own = bucc_split_scores(TEST, SOURCE, TARGET)
    assert own["f1"] == pytest.approx(200 / 3) and own["precision"] == 100.0 and own["recall"] == 50.0
    assert own["threshold"] == pytest.approx((60 / 31 + 20 / 11) / 2, abs=1e-6)


def test_threshold_override_is_used():
    # 1.9 keeps a-p (1.935) only, whatever dev says: P 1, R 1/2, F1 2/3
    fixed = bucc_split_scores(TEST, SOURCE, TARGET, threshold=1.9, dev=(DEV, HUB_SOURCE, HUB_TARGET))
    assert fixed["threshold"] == 1.9 and fixed["f1"] == pytest.approx(200 / 3) and fixed["precision"] == 100.0
    above_all = bucc_split_scores(TEST, SOURCE, TARGET, threshold=2.0)
    assert above_all["f1"] == 0.0 and above_all["threshold"] == 2.0
    candidates = bucc_candidates(TEST, SOURCE, TARGET)
    assert bucc_scores(candidates, TEST.gold, threshold=1.0)["precision"] == pytest.approx(50.0)


def test_repeated_sentences_are_unified_and_dropped():
    # XTREME maps sentences back to ids by text: a sentence occurring twice has no id, so its
    # pairs are dropped; it is mined once (the duplicate row does not crowd the neighbourhoods).
    corpus = RetrievalCorpus(("a", "b", "b2"), ("text a", "text b", "text b"), ("p", "q", "r"),
                             ("text p", "text q", "text r"), (("a", "p"), ("b", "r")))
    source = torch.cat([SOURCE, SOURCE[1:]])
    assert [(s, t) for s, t, _ in bucc_candidates(corpus, source, TARGET)] == [("a", "p")]
    kept = bucc_candidates(corpus, source, TARGET, unify=False)
    assert ("a", "p") in [(s, t) for s, t, _ in kept]


# ---------------------------------------------------------------------------------------------
# CCG: token accuracy
# ---------------------------------------------------------------------------------------------

def test_ccg_scores_token_accuracy():
    from xstilts.tasks.modeling import score
    from xstilts.tasks.registry import get_task

    registered = get_task("ccg")
    assert registered.metric == "accuracy" and registered.tag_metric == "accuracy"
    ccg = replace(registered, labels=("N", "NP", "NP/N", "N/N", "PP"))
    gold = [TaggingExample(("Pierre", "the", "man"), ("NP", "NP/N", "N"))]
    predicted = [["PP", "N/N", "N"]]
    # one token of three right: 33.3; seqeval's chunk F1 (the old metric) reads the tags' first
    # characters as IOBES prefixes and scores the same prediction 50
    assert score(ccg, predicted, gold) == {"accuracy": pytest.approx(100 / 3)}
    assert tagging_prf(predicted, [list(gold[0].tags)])["f1"] == pytest.approx(50.0)
    # a truncated prediction is padded with the first label ("N" here): the missing "N" counts right,
    # as the tagging kind pads for seqeval too
    assert score(ccg, [["NP"]], gold) == {"accuracy": pytest.approx(200 / 3)}
    # NER-like tasks keep seqeval
    assert get_task("panx").tag_metric == "seqeval" and get_task("udpos").metric == "f1"


def test_token_accuracy():
    assert token_accuracy([["a", "b"], ["c"]], [["a", "x"], ["c"]]) == {"accuracy": pytest.approx(200 / 3)}
    assert token_accuracy([["a"]], [["a", "b"]]) == {"accuracy": 50.0}  # missing token: wrong
    assert token_accuracy([], []) == {"accuracy": 0.0}
    with pytest.raises(ValueError):
        token_accuracy([["a"]], [])


def test_evaluate_retrieval_passes_the_threshold_override(tokenizer):
    transformers = pytest.importorskip("transformers")
    from xstilts.tasks.base import DataOptions, TaskSpec
    from xstilts.tasks.retrieval import evaluate_retrieval

    torch.manual_seed(0)
    config = transformers.XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=130,
                                           pad_token_id=tokenizer.pad_token_id)
    model = transformers.XLMRobertaModel(config).eval()
    corpus = RetrievalCorpus(("s0", "s1"), ("the dog sees the cat", "a small red boat"), ("e0", "e1"),
                             ("a small red boat", "the dog sees the cat"), (("s0", "e1"), ("s1", "e0")))
    task = TaskSpec("toy_bucc", "retrieval", ("xx",), (), "f1", loader=lambda *a: [corpus])
    own = evaluate_retrieval(task, model, tokenizer, DataOptions())["xx"]
    assert own["f1"] == 100.0 and math.isfinite(own["threshold"])
    for given in (1e9, {"xx": 1e9}):
        fixed = evaluate_retrieval(task, model, tokenizer, DataOptions(), threshold=given)["xx"]
        assert fixed == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "threshold": 1e9}
    # a mapping without the language: the language's own (dev) threshold
    assert evaluate_retrieval(task, model, tokenizer, DataOptions(), threshold={"yy": 1e9})["xx"] == own
