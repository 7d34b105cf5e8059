"""Transferability scores (xstilts.tasks.transferability): LogME against a direct computation of
the Bayesian evidence, on synthetic features where the answer is known; SEmb on hand-made
embeddings; NDCG@k and Regret@k on hand cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from xstilts.tasks.transferability import _evidence, logme, ndcg_at_k, regret_at_k, semb_similarity


def _direct_log_evidence(features, y, alpha, beta):
    """log N(y | 0, F F^T / alpha + I / beta), computed the slow way (n x n covariance)."""
    n = len(y)
    covariance = features @ features.T / alpha + np.eye(n) / beta
    _, log_det = np.linalg.slogdet(covariance)
    return -0.5 * (n * math.log(2 * math.pi) + log_det + y @ np.linalg.solve(covariance, y))


@pytest.mark.parametrize("n, d", [(40, 5), (12, 30)])  # more examples than features, and fewer
def test_evidence_equals_the_direct_marginal_likelihood(n, d):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, d))
    y = features @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    per_example, alpha, beta = _evidence(s, u.T @ y, y, n, d)
    assert per_example * n == pytest.approx(_direct_log_evidence(features, y, alpha, beta), rel=1e-8)
    if d >= n:  # the features fit y exactly: the noise precision grows without bound, no interior maximum
        return
    # alpha, beta maximise it: nudging either lowers the direct evidence
    best = _direct_log_evidence(features, y, alpha, beta)
    for a, b in ((alpha * 1.2, beta), (alpha / 1.2, beta), (alpha, beta * 1.2), (alpha, beta / 1.2)):
        assert _direct_log_evidence(features, y, a, b) < best


def test_informative_features_score_higher_than_noise():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=300)
    informative = np.eye(3)[labels] * 2.0 + rng.normal(scale=0.5, size=(300, 3))
    informative = np.hstack([informative, rng.normal(size=(300, 13))])
    noise = rng.normal(size=(300, 16))
    assert logme(informative, labels) > logme(noise, labels) + 0.1


def test_semb_on_hand_made_embeddings():
    a = np.array([[1.0, 0.0], [1.0, 2.0]])  # mean (1, 1)
    b = np.array([[2.0, 2.0]])  # mean (2, 2): same direction
    c = np.array([[1.0, -1.0]])  # orthogonal
    assert semb_similarity(a, b) == pytest.approx(1.0)
    assert semb_similarity(a, c) == pytest.approx(0.0)


def test_ndcg_and_regret_on_hand_cases():
    measured = {"mnli": 80.0, "qqp": 75.0, "squad": 70.0, "none": 72.0}
    assert ndcg_at_k(["mnli", "qqp", "none"], measured, 3) == pytest.approx(1.0)  # the ideal order
    # relevance = score - 70: mnli 10, qqp 5, none 2, squad 0; predicted squad, none, mnli:
    # DCG = 0/1 + 2/log2(3) + 10/2 = 6.2619; ideal = 10 + 5/log2(3) + 2/2 = 14.1546
    assert ndcg_at_k(["squad", "none", "mnli"], measured, 3) == pytest.approx((2 / math.log2(3) + 5) / (11 + 5 / math.log2(3)))
    assert regret_at_k(["squad", "none", "mnli"], measured, 1) == pytest.approx(100 * (80 - 70) / 80)
    assert regret_at_k(["squad", "none", "mnli"], measured, 3) == 0.0
