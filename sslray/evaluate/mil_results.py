"""From the grid's trials to outer-fold scores: the chosen configuration per (head, outer fold)
and its test metrics at bag and patient level (docs/protocols.md, "Nested cross-validation").

A trial is a grid point ``{"head", "lr", "weight_decay", "fold"}`` with its ``GridPoint`` result.
For each head and outer fold the point with the best mean inner validation score wins (its epoch
count is already the best of its curve), and its test outputs are scored. No Ray import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sslray.evaluate.bags import Bags
from sslray.evaluate.folds import Fold
from sslray.evaluate.metrics import average_by_group, class_probabilities, classification_scores, group_targets

HYPERPARAMETERS = ("lr", "weight_decay")


@dataclass
class OuterFold:
    """One head's chosen point on one outer fold, with the test bags' outputs."""

    fold: int
    params: dict
    best_epoch: int
    inner_score: float
    test: np.ndarray  # bag indices
    outputs: np.ndarray  # (n_test, n_outputs)


@dataclass
class HeadResult:
    folds: list[OuterFold] = field(default_factory=list)

    def best_params(self) -> list[dict]:
        return [{**f.params, "epochs": f.best_epoch, "inner_score": f.inner_score} for f in self.folds]


def choose(points: list[dict], results: list[dict], folds: list[Fold]) -> dict[str, HeadResult]:
    """Per head, per outer fold: the grid point with the highest inner score (ties: the earlier point)."""
    chosen: dict[str, dict[int, tuple[dict, dict]]] = {}
    for point, result in zip(points, results):
        slot = chosen.setdefault(point["head"], {})
        held = slot.get(point["fold"])
        if held is None or _better(result["best_val"], held[1]["best_val"]):
            slot[point["fold"]] = (point, result)
    heads = {}
    for head, per_fold in chosen.items():
        heads[head] = HeadResult([
            OuterFold(k, {p: point[p] for p in HYPERPARAMETERS if p in point}, result["best_epoch"],
                      result["best_val"], folds[k].test, np.asarray(result["test_outputs"], dtype=np.float64))
            for k, (point, result) in sorted(per_fold.items())])
    return heads


def _better(score: float, held: float) -> bool:
    return np.isfinite(score) and (not np.isfinite(held) or score > held)


def fold_scores(bags: Bags, fold: OuterFold) -> dict[str, float]:
    """The test metrics of one outer fold, bag level and (with patients) patient level."""
    targets = bags.targets()[fold.test]
    if bags.labels is None:
        return survival_scores(targets, fold.outputs[:, 0])
    proba = class_probabilities(fold.outputs)
    if proba.shape[1] != len(bags.classes):  # a binary head's one logit is already two columns
        raise ValueError(f"{proba.shape[1]} outputs for {len(bags.classes)} classes")
    scores = classification_scores(targets, proba)
    if bags.patients is not None:
        patients = bags.patients[fold.test]
        if len(np.unique(patients)) < len(patients):  # several slides per patient: average them
            _, patient_proba = average_by_group(proba, patients)
            patient_scores = classification_scores(group_targets(targets, patients), patient_proba)
            scores.update({f"patient_{k}": v for k, v in patient_scores.items()})
    return scores


def survival_scores(targets: np.ndarray, risk: np.ndarray) -> dict[str, float]:
    from sslray.evaluate.survival import concordance

    return {"c_index": concordance(targets[:, 0], risk, targets[:, 1].astype(bool))}


def head_metrics(bags: Bags, result: HeadResult) -> dict[str, list[float]]:
    """Metric name -> the value on each outer fold."""
    per_fold = [fold_scores(bags, f) for f in result.folds]
    return {name: [s.get(name, float("nan")) for s in per_fold] for name in per_fold[0]}


def pooled_outputs(result: HeadResult, n_bags: int) -> tuple[np.ndarray, np.ndarray]:
    """(bag indices, outputs) of every outer test fold together: each bag is tested exactly once."""
    index = np.concatenate([f.test for f in result.folds])
    outputs = np.concatenate([f.outputs for f in result.folds])
    if len(np.unique(index)) != len(index) or len(index) > n_bags:
        raise ValueError("outer test folds overlap")
    return index, outputs
