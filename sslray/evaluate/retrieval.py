"""Retrieval scores of profiles: average precision (AP), mean AP (mAP) with p-values, phenotypic activity.

This is the mAP framework of Kalinin et al. 2025 (Nature Communications, "A versatile information
retrieval framework for evaluating profile strength and similarity") as copairs 0.5.5 computes it:

- ``average_precision``: each profile is a query; its positives are the profiles sharing every
  ``pos_sameby`` value and differing in every ``pos_diffby`` value, its negatives those sharing every
  ``neg_sameby`` value and differing in every ``neg_diffby`` value (a profile can be both). The
  candidates are ranked by cosine similarity (float32, as copairs stores it), ties putting positives
  first, and AP = mean over positives of (positives ranked so far / rank).
- ``mean_average_precision``: mAP per group of ``sameby``; its p-value compares the mAP with the
  mean, over the group's queries, of a null of random APs (M positives placed uniformly among L
  candidates, one null per (M, L), so queries with the same (M, L) share it, as in copairs):
  p = (#null > mAP + 1) / (null_size + 1); Benjamini-Hochberg corrects them over the groups.

The nulls are drawn from this module's own seeded generator, so p-values agree with copairs' in
distribution, not digit for digit. Pure numpy/pandas/scipy (no Ray).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

from sslray.evaluate.replicates import feature_matrix, require_columns

REFERENCE = "_sslray_reference_index"


def pair_codes(meta: pd.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Integer codes of each pairing column; a missing value is a ValueError naming the column."""
    require_columns(meta, columns, "pairing")
    out = {}
    for c in columns:
        if meta[c].isna().any():
            raise ValueError(f"column {c!r} has missing values; pairs cannot be defined on it")
        out[c] = pd.factorize(meta[c])[0]
    return out


def pair_mask(
    codes: dict[str, np.ndarray], rows: np.ndarray, sameby: Sequence[str], diffby: Sequence[str]
) -> np.ndarray:
    """(len(rows), n) mask: j shares every ``sameby`` and differs in every ``diffby`` value of row i, j != i."""
    n = len(next(iter(codes.values())))
    mask = np.ones((len(rows), n), dtype=bool)
    for c in sameby:
        mask &= codes[c][rows, None] == codes[c][None, :]
    for c in diffby:
        mask &= codes[c][rows, None] != codes[c][None, :]
    mask[np.arange(len(rows)), rows] = False
    return mask


def ranked_ap(pos_keys: np.ndarray, neg_keys: np.ndarray) -> float:
    """AP of a query whose positives/negatives have these keys (1 - similarity, smaller is nearer).

    A positive at the m-th place among positives is ranked m + (negatives strictly nearer): ties
    between a positive and a negative put the positive first.
    """
    m = np.arange(1, len(pos_keys) + 1)
    ahead = np.searchsorted(np.sort(neg_keys), np.sort(pos_keys), side="left")
    precision = np.zeros(len(pos_keys) + len(neg_keys))  # over the whole ranked list and summed by
    precision[m - 1 + ahead] = m / (m + ahead)  # reduceat, so the float sum is copairs' to the last bit
    return float(np.add.reduceat(precision, [0])[0] / len(m))


def average_precision(
    meta: pd.DataFrame,
    feats: np.ndarray,
    pos_sameby: Sequence[str],
    pos_diffby: Sequence[str],
    neg_sameby: Sequence[str],
    neg_diffby: Sequence[str],
    distance: str = "cosine",
    batch_rows: int = 1024,
) -> pd.DataFrame:
    """``meta`` (index reset) with ``average_precision``, ``n_pos_pairs`` and ``n_total_pairs`` per query.

    A query with no positive has AP NaN (and ``n_pos_pairs`` 0), as in copairs. ``distance`` is
    "cosine" (copairs' default) or "correlation" (Pearson between profiles).
    """
    if not (pos_sameby or pos_diffby) or not (neg_sameby or neg_diffby):
        raise ValueError("positive and negative pairs each need at least one sameby or diffby column")
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(meta):
        raise ValueError(f"features have shape {x.shape} but the metadata has {len(meta)} rows")
    if not np.isfinite(x).all():
        raise ValueError("features have NaN or infinite values")
    if distance == "correlation":
        x = x - x.mean(axis=1, keepdims=True)
    elif distance != "cosine":
        raise ValueError(f"distance {distance!r} is not 'cosine' or 'correlation'")
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    meta = meta.reset_index(drop=True).copy()
    codes = pair_codes(meta, list(dict.fromkeys([*pos_sameby, *pos_diffby, *neg_sameby, *neg_diffby])))
    ap = np.full(len(meta), np.nan)
    n_pos = np.zeros(len(meta), dtype=np.int64)
    n_total = np.zeros(len(meta), dtype=np.int64)
    for start in range(0, len(meta), batch_rows):
        rows = np.arange(start, min(start + batch_rows, len(meta)))
        keys = np.float32(1) - (x[rows] @ x.T).astype(np.float32)
        pos = pair_mask(codes, rows, pos_sameby, pos_diffby)
        neg = pair_mask(codes, rows, neg_sameby, neg_diffby)
        for r, i in enumerate(rows):
            p, q = keys[r][pos[r]], keys[r][neg[r]]
            n_pos[i], n_total[i] = len(p), len(p) + len(q)
            if len(p):
                ap[i] = ranked_ap(p, q)
    meta["n_pos_pairs"], meta["n_total_pairs"], meta["average_precision"] = n_pos, n_total, ap
    return meta


def null_average_precision(n_pos: int, n_total: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` APs of ``n_pos`` positives ranked uniformly at random among ``n_total`` candidates."""
    out = np.empty(size)
    m = np.arange(1, n_pos + 1)
    chunk = max(1, (1 << 22) // max(n_total, n_pos * 8))
    for start in range(0, size, chunk):
        b = min(chunk, size - start)
        if n_pos * n_pos <= n_total:  # few positives: draw ranks and redraw the rows with a repeat
            ranks = np.sort(rng.integers(0, n_total, (b, n_pos)), axis=1)
            repeat = (np.diff(ranks, axis=1) == 0).any(axis=1)
            while repeat.any():
                ranks[repeat] = np.sort(rng.integers(0, n_total, (int(repeat.sum()), n_pos)), axis=1)
                repeat = (np.diff(ranks, axis=1) == 0).any(axis=1)
        else:
            ranks = np.sort(np.argpartition(rng.random((b, n_total)), n_pos - 1, axis=1)[:, :n_pos], axis=1)
        out[start : start + b] = (m / (ranks + 1)).mean(axis=1)
    return out


def mean_average_precision(
    ap_scores: pd.DataFrame, sameby: Sequence[str], null_size: int, threshold: float, seed: int
) -> pd.DataFrame:
    """Per ``sameby`` group: ``mean_average_precision``, ``n_queries``, ``p_value``, ``corrected_p_value`` (BH),
    ``below_p`` and ``below_corrected_p`` (< ``threshold``). Queries with AP NaN are left out."""
    require_columns(ap_scores, sameby, "mAP group")
    if null_size < 1:
        raise ValueError(f"null_size must be >= 1, got {null_size}")
    scored = ap_scores[ap_scores["average_precision"].notna() & (ap_scores["n_pos_pairs"] > 0)]
    if scored.empty:
        raise ValueError("no query has a positive pair: mAP is undefined")
    confs = scored[["n_pos_pairs", "n_total_pairs"]].to_numpy()
    unique, inverse = np.unique(confs, axis=0, return_inverse=True)
    nulls = np.stack(
        [
            null_average_precision(int(m), int(total), null_size, np.random.default_rng([seed, m, total]))
            for m, total in unique
        ]
    )
    grouped = scored.reset_index(drop=True).groupby(list(sameby), sort=True, observed=True)
    means = grouped["average_precision"].mean()  # pandas' group mean, as copairs takes it
    rows = []
    for key, index in grouped.indices.items():
        value = float(means.loc[key])
        null = nulls[inverse.reshape(-1)[index]].mean(axis=0)
        keys = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip(sameby, keys)),
                "mean_average_precision": value,
                "n_queries": len(index),
                "p_value": (int((null > value).sum()) + 1) / (null_size + 1),
            }
        )
    out = pd.DataFrame(rows)
    out["corrected_p_value"] = false_discovery_control(out["p_value"].to_numpy(), method="bh")
    out["below_p"] = out["p_value"] < threshold
    out["below_corrected_p"] = out["corrected_p_value"] < threshold
    return out


def map_replicates(
    df: pd.DataFrame,
    features: Sequence[str],
    perturbation_column: str,
    controls: np.ndarray,
    null_size: int = 10000,
    seed: int = 0,
    threshold: float = 0.05,
) -> pd.DataFrame:
    """Per perturbation: mAP of retrieving its replicate wells against the control wells (Kalinin et al.).

    A treated well's positives are the other wells of its perturbation, its negatives the control
    wells (``controls`` is a boolean mask over ``df``'s rows); controls are never queries. A
    perturbation is "phenotypically active" when its corrected p-value is below ``threshold``.
    """
    require_columns(df, [perturbation_column], "perturbation")
    controls = np.asarray(controls, dtype=bool)
    if not controls.any():
        raise ValueError("replicate retrieval needs control wells as negatives; none are marked")
    meta = df[[perturbation_column]].reset_index(drop=True).copy()
    meta[REFERENCE] = np.where(controls, np.arange(len(meta)), -1)
    both = [perturbation_column, REFERENCE]
    ap = average_precision(meta, feature_matrix(df, features), both, [], [], both)
    return mean_average_precision(ap[~controls], [perturbation_column], null_size, threshold, seed)


def map_moa(
    df: pd.DataFrame,
    features: Sequence[str],
    moa_column: str,
    perturbation_column: str | None = None,
    null_size: int = 10000,
    seed: int = 0,
    threshold: float = 0.05,
) -> pd.DataFrame:
    """Per MoA: mAP of retrieving profiles of the same MoA (of another perturbation) among other MoAs.

    Meant for perturbation-level (consensus) profiles of treated wells; rows with no MoA are left
    out. With ``perturbation_column``, positives must also be other perturbations (for well-level use).
    """
    require_columns(df, [moa_column], "MoA")
    kept = df[df[moa_column].notna()]
    meta = kept[[moa_column] + ([perturbation_column] if perturbation_column else [])]
    ap = average_precision(
        meta,
        feature_matrix(kept, features),
        [moa_column],
        [perturbation_column] if perturbation_column else [],
        [],
        [moa_column],
    )
    return mean_average_precision(ap, [moa_column], null_size, threshold, seed)


def fraction_active(replicate_maps: pd.DataFrame) -> float:
    """Fraction of perturbations whose replicate-retrieval corrected p-value is below the threshold."""
    return float(replicate_maps["below_corrected_p"].mean())
