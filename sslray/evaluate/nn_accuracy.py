"""Cosine 1-nearest-neighbour accuracy of well profiles with not-same-compound / not-same-batch exclusions.

The classic BBBC021 MoA benchmark (Ljosa et al. 2013, Ando et al. 2017) scores a profile by the
label of its nearest neighbour, leaving out neighbours that would make the task trivial. The
exclusions here are CellPaintSSL's (Kim et al. 2025) and uniDINO's (Bayer-Group/uniDINO) code:

- ``"nn"``: every other well is a candidate.
- ``"nsc"`` (not same compound): wells of the query's compound are left out, so a MoA label must be
  found in another compound of that MoA (their "NSP"/"NSW" mode).
- ``"nsb"`` (not same batch): wells of the query's batch *that carry the query's label* are left
  out; wells of the batch with another label stay candidates (their "NSB" mode). With the
  perturbation as label this asks for a replicate in another batch.
- ``"nscb"``: both exclusions.

Profiles are standard-scaled (z-scored per feature over the scored wells) before the cosine
distance, as both codes do; the caller leaves the control wells out. A query with no candidate
left is not scored; a label whose every other instance is excluded counts as a miss, as in the
references. Pure numpy/scikit-learn (no Ray).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from sslray.evaluate.replicates import feature_matrix, require_columns

EXCLUSIONS = ("nn", "nsc", "nsb", "nscb")


def excluded_mask(
    rows: np.ndarray, labels: np.ndarray, compounds: np.ndarray | None, batches: np.ndarray | None, exclude: str
) -> np.ndarray:
    """(len(rows), n) mask of neighbours that query ``rows`` may not use (itself included)."""
    n = len(labels)
    mask = np.zeros((len(rows), n), dtype=bool)
    mask[np.arange(len(rows)), rows] = True
    if "c" in exclude[2:]:
        mask |= compounds[rows, None] == compounds[None, :]
    if "b" in exclude[2:]:
        mask |= (batches[rows, None] == batches[None, :]) & (labels[rows, None] == labels[None, :])
    return mask


def nearest_labels(
    x: np.ndarray,
    labels: np.ndarray,
    compounds: np.ndarray | None,
    batches: np.ndarray | None,
    exclude: str,
    batch_rows: int = 2048,
) -> np.ndarray:
    """Index of each row's cosine-nearest allowed neighbour (-1 when none is allowed)."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), batch_rows):
        rows = np.arange(start, min(start + batch_rows, len(x)))
        distance = 1.0 - unit[rows] @ unit.T
        blocked = excluded_mask(rows, labels, compounds, batches, exclude)
        distance[blocked] = np.inf
        best = distance.argmin(axis=1)
        best[np.isinf(distance[np.arange(len(rows)), best])] = -1
        out[rows] = best
    return out


def nn_accuracy(
    df: pd.DataFrame,
    features: Sequence[str],
    label_column: str,
    exclude: str = "nsc",
    compound_column: str | None = None,
    batch_column: str | None = None,
    standardize: bool = True,
) -> dict:
    """1-NN accuracy of ``label_column`` over ``df``'s wells (treated wells only) with an exclusion.

    ``exclude`` is "nn", "nsc" (needs ``compound_column``), "nsb" (needs ``batch_column``) or "nscb"
    (both). Wells with no label are left out. Returns {"accuracy", "n_scored", "n_unscored"
    (queries with no allowed neighbour), "correct" (a boolean Series over the scored wells)}.
    """
    if exclude not in EXCLUSIONS:
        raise ValueError(f"exclude {exclude!r} is not one of {EXCLUSIONS}")
    if "c" in exclude[2:] and not compound_column:
        raise ValueError(f"{exclude} accuracy needs compound_column")
    if "b" in exclude[2:] and not batch_column:
        raise ValueError(f"{exclude} accuracy needs batch_column")
    needed = [c for c in (label_column, compound_column, batch_column) if c]
    require_columns(df, needed, "nearest-neighbour")
    kept = df[df[label_column].notna()]
    if len(kept) < 2:
        raise ValueError(f"{label_column!r} labels fewer than two wells: no nearest neighbour to score")
    x = feature_matrix(kept, features)
    if standardize:
        x = StandardScaler().fit_transform(x)
    labels = pd.factorize(kept[label_column])[0]
    compounds = pd.factorize(kept[compound_column].astype(str))[0] if compound_column else None
    batches = pd.factorize(kept[batch_column].astype(str))[0] if batch_column else None
    nearest = nearest_labels(x, labels, compounds, batches, exclude)
    scored = nearest >= 0
    if not scored.any():
        raise ValueError(f"no well has an allowed neighbour under the {exclude} exclusion")
    correct = pd.Series(labels[scored] == labels[nearest[scored]], index=kept.index[scored], name="correct")
    return {
        "accuracy": float(correct.mean()),
        "n_scored": int(scored.sum()),
        "n_unscored": int((~scored).sum()),
        "correct": correct,
    }
