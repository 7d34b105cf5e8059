"""The metric functions: one implementation, used by the trainables, `analysis` and `xstilts evaluate`.

All scores are percentages (0-100), as the XTREME scorer reports them.
"""
from __future__ import annotations

import warnings
from typing import Sequence

from seqeval.metrics import f1_score, precision_score, recall_score


def accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """100 x exact string matches / examples (XNLI, PAWS-X, Tatoeba)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        return 0.0
    return 100.0 * sum(p == g for p, g in zip(predictions, labels)) / len(labels)


def tagging_prf(predictions: Sequence[Sequence[str]], labels: Sequence[Sequence[str]]) -> dict[str, float]:
    """Chunk-level micro precision/recall/F1 as seqeval's default (conlleval) mode computes them.

    XTREME scores UD-POS this way too (not token accuracy): seqeval reads the first character of
    every tag as an IOBES prefix, so for POS a chunk is a run of identical tags.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predicted sentences for {len(labels)} gold sentences")
    gold = [list(s) for s in labels]
    pred = [list(s) for s in predictions]
    with warnings.catch_warnings():
        # seqeval warns "X seems not to be NE tag" for every POS tag: expected, see above.
        warnings.simplefilter("ignore", UserWarning)
        return {
            "precision": 100.0 * float(precision_score(gold, pred, zero_division=0)),
            "recall": 100.0 * float(recall_score(gold, pred, zero_division=0)),
            "f1": 100.0 * float(f1_score(gold, pred, zero_division=0)),
        }
