"""Scores of tile-level predictions (linear probe, kNN): tile, image and patient level, with bootstrap
intervals, in numpy and scikit-learn (no Ray).

- ``balanced_accuracy``, ``accuracy`` and ``macro_auc`` (binary ROC AUC, or macro one-vs-rest AUC over
  the classes present, ``metrics.auc``) over the test tiles.
- With patients (a ``patient_id`` column), MPCS's two numbers (docs/protocols.md, "Linear probe on
  tile embeddings"): ``image_accuracy`` is the mean over test images of the fraction of each image's
  tiles predicted correctly (one tile per image, or no ``image_id`` column: the tile accuracy), and
  ``patient_accuracy`` is the mean over test patients of the fraction of each patient's tiles
  predicted correctly, so a patient with many tiles weighs as much as one with few.
- ``ci95``: HistoSSLscaling's basic bootstrap interval (``metrics.bootstrap_ci``). The resampled
  unit is the patient when there are patients, else the group the split keeps apart, else the
  tile: tiles of one patient are not independent, and resampling them one by one would make the
  interval too narrow. A unit drawn twice counts as two patients (and its images as two images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sslray.evaluate.metrics import auc, average_by_group, bootstrap_ci, summarise


@dataclass
class TilePredictions:
    """The test tiles' class indices and predicted probabilities, with their image and patient ids."""

    targets: np.ndarray  # (n,) class indices
    proba: np.ndarray  # (n, n_classes)
    images: np.ndarray | None = None
    patients: np.ndarray | None = None  # None: no image- or patient-level accuracy

    @property
    def correct(self) -> np.ndarray:
        return self.proba.argmax(axis=1) == self.targets


def accuracy_by_group(correct: np.ndarray, groups: np.ndarray) -> float:
    """The mean over groups of each group's fraction of correct tiles."""
    _, per_group = average_by_group(np.asarray(correct, dtype=np.float64), groups)
    return float(per_group.mean())


def balanced_accuracy(pred: TilePredictions) -> float:
    """The mean recall over the classes present among the targets: scikit-learn's
    ``balanced_accuracy_score``, in two bincounts, since a bootstrap calls it a thousand times."""
    n = pred.proba.shape[1]
    support = np.bincount(pred.targets, minlength=n)
    hits = np.bincount(pred.targets[pred.correct], minlength=n)
    present = support > 0
    return float((hits[present] / support[present]).mean())


def _image_accuracy(pred: TilePredictions) -> float:
    return accuracy_by_group(pred.correct, pred.images) if pred.images is not None else float(pred.correct.mean())


SCORES: dict[str, Callable[[TilePredictions], float]] = {
    "balanced_accuracy": balanced_accuracy,
    "macro_auc": lambda p: auc(p.targets, p.proba),
    "accuracy": lambda p: float(p.correct.mean()),
}
GROUP_SCORES: dict[str, Callable[[TilePredictions], float]] = {
    "image_accuracy": _image_accuracy,
    "patient_accuracy": lambda p: accuracy_by_group(p.correct, p.patients),
}


def _scores_for(pred: TilePredictions) -> dict[str, Callable[[TilePredictions], float]]:
    return SCORES | (GROUP_SCORES if pred.patients is not None else {})


def tile_scores(pred: TilePredictions) -> dict[str, float]:
    """Every score of ``pred`` (the group-level ones only when it has patients)."""
    return {name: score(pred) for name, score in _scores_for(pred).items()}


def bootstrap_intervals(pred: TilePredictions, units: np.ndarray | None, n_resamples: int,
                        seed: int = 0) -> dict[str, tuple[float, float]]:
    """The basic 95% interval of every score, resampling whole ``units`` (None: single tiles). Every
    score sees the same resamples (one seed), so the intervals describe one set of test draws."""
    resample = _Resampler(pred, units)
    return {name: bootstrap_ci(lambda draw, score=score: score(resample(draw)), resample.n_units, n_resamples, seed)
            for name, score in _scores_for(pred).items()}


class _Resampler:
    """Maps a draw of unit indices (with repeats) to the predictions of those units' tiles, each
    drawn copy of a unit made its own images and patients."""

    def __init__(self, pred: TilePredictions, units: np.ndarray | None) -> None:
        self.pred = pred
        units = np.arange(len(pred.targets)) if units is None else units
        _, unit_of = np.unique(units, return_inverse=True)
        self.order = np.argsort(unit_of, kind="stable")
        self.counts = np.bincount(unit_of)
        self.offsets = np.cumsum(self.counts) - self.counts
        self.images = _codes(pred.images)
        self.patients = _codes(pred.patients)

    @property
    def n_units(self) -> int:
        return len(self.counts)

    def __call__(self, draw: np.ndarray) -> TilePredictions:
        sizes = self.counts[draw]
        copy = np.repeat(np.arange(len(draw)), sizes)
        within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        rows = self.order[np.repeat(self.offsets[draw], sizes) + within]
        return TilePredictions(self.pred.targets[rows], self.pred.proba[rows], _per_copy(self.images, rows, copy),
                               _per_copy(self.patients, rows, copy))


def _codes(ids: np.ndarray | None) -> np.ndarray | None:
    return None if ids is None else np.unique(ids, return_inverse=True)[1].astype(np.int64)


def _per_copy(codes: np.ndarray | None, rows: np.ndarray, copy: np.ndarray) -> np.ndarray | None:
    if codes is None:
        return None
    return copy * (int(codes.max()) + 1) + codes[rows]


def scored_model(pred: TilePredictions, units: np.ndarray | None, n_bootstrap: int, seed: int,
                 best_params: dict) -> tuple[dict[str, float], dict]:
    """(the scores, the model's ``results.json`` entry: every score with its interval, and the params)."""
    scores = tile_scores(pred)
    intervals = bootstrap_intervals(pred, units, n_bootstrap, seed) if n_bootstrap else {}
    entry: dict = {name: summarise([value], ci95=intervals.get(name)) for name, value in scores.items()}
    return scores, {**entry, "best_params": best_params}


def logged_metrics(entry: dict, prefix: str) -> dict[str, float]:
    """A results.json model entry as flat MLflow metrics: ``<prefix><metric>`` (the mean), ``..._sd`` over
    several seeds, ``..._ci95_low``/``_high`` when bootstrapped; values that are not finite are left out."""
    out = {}
    for metric, value in entry.items():
        if not (isinstance(value, dict) and "mean" in value):
            continue
        out[f"{prefix}{metric}"] = value["mean"]
        if len(value["folds"]) > 1:
            out[f"{prefix}{metric}_sd"] = value["sd"]
        if "ci95" in value:
            out[f"{prefix}{metric}_ci95_low"], out[f"{prefix}{metric}_ci95_high"] = value["ci95"]
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}
