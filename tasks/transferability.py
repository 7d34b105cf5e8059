"""Ranking intermediate tasks before training them: transferability scores and ranking metrics.

Pure numpy, no model: the features come from the caller (`xstilts.tasks.embeddings.mean_pooled`).

- `logme(features, labels)`: LogME (You et al., ICML 2021, "LogME: Practical Assessment of
  Pre-trained Models for Transfer Learning"): the log marginal likelihood (evidence) per example
  of a Bayesian linear model from the features to the labels, with its prior precision alpha and
  noise precision beta set by evidence maximisation (MacKay's fixed-point updates). Higher: the
  labels are easier to read off the features. Classification labels are one-hot; the score is
  the mean over the label columns. Written from the paper (its Algorithm 1), not a package.
- `semb_similarity(a, b)`: SEmb (Poth et al., EMNLP 2021, "What to Pre-Train on? Efficient
  Intermediate Task Selection"): the cosine similarity of the two tasks' mean sentence
  embeddings under the same encoder. Training-free.
- `ndcg_at_k`, `regret_at_k`: how a predicted ranking compares with measured outcomes (Poth et
  al.'s evaluation): NDCG@k with the measured scores as relevance, and Regret@k, the percentage
  by which the best measured score among the top-k predicted falls short of the best overall.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def _evidence(singular_values: np.ndarray, projected: np.ndarray, y: np.ndarray, n: int, d: int,
              max_iterations: int = 100, tolerance: float = 1e-5) -> tuple[float, float, float]:
    """(evidence / n, alpha, beta) for one label column. `singular_values` s and `projected` U^T y
    come from the thin SVD F = U diag(s) V^T; sigma = s^2 are the eigenvalues of F^T F (the other
    d - rank of them are 0)."""
    sigma = singular_values ** 2
    y_norm2 = float(y @ y)
    # ||F m - y||^2 splits into the part of y outside the column space of F (fixed) and the rest.
    outside = max(y_norm2 - float(projected @ projected), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(max_iterations):
        shrink = beta * sigma / (alpha + beta * sigma)
        gamma = float(shrink.sum())
        # m = V diag(beta s / (alpha + beta s^2)) U^T y: its norm, and the residual, in that basis
        m_norm2 = float(((beta * singular_values / (alpha + beta * sigma)) * projected) @
                        ((beta * singular_values / (alpha + beta * sigma)) * projected))
        residual2 = float(((1 - shrink) * projected) @ ((1 - shrink) * projected)) + outside
        new_alpha = gamma / max(m_norm2, 1e-300)
        new_beta = (n - gamma) / max(residual2, 1e-300)
        converged = abs(new_alpha - alpha) / alpha < tolerance and abs(new_beta - beta) / beta < tolerance
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    shrink = beta * sigma / (alpha + beta * sigma)
    m_scale = beta * singular_values / (alpha + beta * sigma)
    m_norm2 = float((m_scale * projected) @ (m_scale * projected))
    residual2 = float(((1 - shrink) * projected) @ ((1 - shrink) * projected)) + outside
    log_det = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * math.log(alpha)
    evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * residual2 - alpha / 2 * m_norm2 - log_det / 2)
    return evidence / n, alpha, beta


def logme(features: np.ndarray, labels: Sequence, regression: bool = False) -> float:
    """LogME of `labels` on `features` (n x d): the mean over label columns of the per-example log
    evidence. Class labels (any hashable) become one-hot columns; with `regression`, `labels` are
    the target values themselves (n, or n x k)."""
    features = np.asarray(features, dtype=np.float64)
    n, d = features.shape
    if n < 2:
        raise ValueError("LogME needs at least 2 examples")
    if regression:
        targets = np.asarray(labels, dtype=np.float64).reshape(n, -1)
    else:
        classes = sorted(set(labels), key=str)
        if len(classes) < 2:
            raise ValueError("LogME needs at least 2 classes")
        index = {c: i for i, c in enumerate(classes)}
        targets = np.zeros((n, len(classes)))
        targets[np.arange(n), [index[label] for label in labels]] = 1.0
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    keep = s > s.max() * 1e-12 if s.size else s.astype(bool)
    u, s = u[:, keep], s[keep]
    return float(np.mean([_evidence(s, u.T @ targets[:, k], targets[:, k], n, d)[0] for k in range(targets.shape[1])]))


def semb_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of the mean embeddings of two tasks' texts (rows: one embedding per text)."""
    mean_a, mean_b = np.asarray(a, dtype=np.float64).mean(axis=0), np.asarray(b, dtype=np.float64).mean(axis=0)
    norm = float(np.linalg.norm(mean_a) * np.linalg.norm(mean_b))
    return float(mean_a @ mean_b / norm) if norm > 0 else 0.0


def ndcg_at_k(predicted: Sequence[str], measured: Mapping[str, float], k: int) -> float:
    """NDCG@k of a predicted order against measured scores as relevance (higher: better); the
    scores are shifted so the worst measured task has relevance 0."""
    floor = min(measured.values())
    relevance = {name: measured[name] - floor for name in measured}

    def dcg(order: Sequence[str]) -> float:
        return sum(relevance.get(name, 0.0) / math.log2(rank + 2) for rank, name in enumerate(order[:k]))

    ideal = dcg(sorted(measured, key=measured.get, reverse=True))
    return dcg(list(predicted)) / ideal if ideal > 0 else 1.0


def regret_at_k(predicted: Sequence[str], measured: Mapping[str, float], k: int) -> float:
    """Regret@k in percent: (best measured - best measured among the top k predicted) / best measured."""
    best = max(measured.values())
    chosen = max((measured[name] for name in list(predicted)[:k] if name in measured), default=float("-inf"))
    if best == 0:
        return 0.0 if chosen >= best else float("inf")
    return 100.0 * (best - chosen) / abs(best)
