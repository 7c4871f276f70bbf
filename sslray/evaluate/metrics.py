"""Scores of bag (or tile) predictions and their summary over folds, in scikit-learn and numpy.

``summarise`` is the shape every protocol's ``results.json`` reports a metric in: the mean and
sample sd over outer folds, the per-fold values and, where bootstrapped, a 95% interval
(docs/protocols.md). The bootstrap interval is the "basic" one HistoSSLscaling uses:
(2θ − q97.5, 2θ − q2.5) of the resampled metric. No Ray import.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """(n, C) class probabilities from a head's logits: one logit is a binary head (sigmoid)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
        return np.stack([1 - p, p], axis=1)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def auc(targets: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC (binary) or macro one-vs-rest AUC over the classes present; NaN with one class."""
    present = np.unique(targets)
    if len(present) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(targets == 1, proba[:, 1]))
    scores = proba[:, present] / proba[:, present].sum(axis=1, keepdims=True)
    if len(present) == 2:
        return float(roc_auc_score(targets == present[1], scores[:, 1]))
    return float(roc_auc_score(targets, scores, multi_class="ovr", average="macro", labels=present))


def classification_scores(targets: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    predicted = proba.argmax(axis=1)
    return {"auc": auc(targets, proba), "balanced_accuracy": float(balanced_accuracy_score(targets, predicted)),
            "accuracy": float(accuracy_score(targets, predicted))}


def average_by_group(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique groups, the mean of ``values``' rows per group): slide predictions to patients."""
    keys, index = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(keys),) + values.shape[1:])
    np.add.at(sums, index, values)
    return keys, sums / np.bincount(index).reshape((-1,) + (1,) * (values.ndim - 1))


def group_targets(targets: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The target of each group (sorted as ``average_by_group``); a group with two targets is an error."""
    keys, index = np.unique(groups, return_inverse=True)
    out = np.empty(len(keys), dtype=targets.dtype)
    for k in range(len(keys)):
        values = np.unique(targets[index == k])
        if len(values) > 1:
            raise ValueError(f"patient {str(keys[k])!r} has bags with different labels; patient-level scores need one")
        out[k] = values[0]
    return out


def summarise(folds: list[float], ci95: tuple[float, float] | None = None) -> dict:
    """{"mean", "sd" (sample sd, 0 for one fold), "folds"[, "ci95"]}, NaN folds left out of mean and sd."""
    values = np.asarray(folds, dtype=np.float64)
    finite = values[np.isfinite(values)]
    out = {"mean": float(finite.mean()) if len(finite) else float("nan"),
           "sd": float(finite.std(ddof=1)) if len(finite) > 1 else 0.0,
           "folds": [float(v) for v in values]}
    if ci95 is not None:
        out["ci95"] = [float(ci95[0]), float(ci95[1])]
    return out


def bootstrap_ci(metric: Callable[[np.ndarray], float], n: int, n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """The basic bootstrap interval of ``metric(indices)`` over ``n`` samples (resamples giving NaN,
    e.g. one class only, are dropped)."""
    rng = np.random.default_rng(seed)
    theta = metric(np.arange(n))
    draws = np.array([metric(rng.integers(0, n, n)) for _ in range(n_resamples)])
    draws = draws[np.isfinite(draws)]
    if not len(draws) or not np.isfinite(theta):
        return float("nan"), float("nan")
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(2 * theta - hi), float(2 * theta - lo)
