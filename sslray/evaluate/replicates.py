"""Replicate metrics of well profiles: do wells of one perturbation look more alike than wells of others?

Three scores of the profiling literature, each reproducing its reference's definition:

- ``replicate_reproducibility``: cytominer-eval's "percent strong" (its ``replicate_reproducibility``
  operation): the fraction of replicate pairs whose correlation exceeds the q-quantile of all
  non-replicate pairs.
- ``precision_at_k``: cytominer-eval's ``precision_recall``: per replicate group, the share of
  replicate pairs among the group's k most similar pairs.
- ``percent_replicating``: Way et al. 2022 (Cell Systems) and CellPaintSSL (Kim et al. 2025): the
  fraction of perturbations whose median replicate correlation exceeds the 95th percentile of a null
  of median correlations of random groups of wells from distinct perturbations.

Pure numpy/pandas (no Ray); docs/protocols.md gives the definitions with their references.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SIMILARITY_METHODS = ("pearson", "spearman", "kendall")


def require_columns(df: pd.DataFrame, columns: Sequence[str], role: str) -> None:
    """A ValueError naming the ``role`` (e.g. "replicate group") and each column the table lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{role} column(s) {missing} not in the profiles table (it has {list(df.columns)[:12]}...)")


def feature_matrix(df: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """The (n, d) float64 feature matrix; a missing feature or a NaN/inf value is a ValueError naming it."""
    require_columns(df, features, "feature")
    x = df[list(features)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        column = list(features)[int(np.nonzero(bad.any(axis=0))[0][0])]
        raise ValueError(f"feature column {column!r} has NaN or infinite values; impute or drop it first")
    return x


def similarity_matrix(x: np.ndarray, method: str = "pearson") -> np.ndarray:
    """(n, n) correlation between the rows of ``x`` (profiles): Pearson, Spearman or Kendall."""
    if method not in SIMILARITY_METHODS:
        raise ValueError(f"similarity method {method!r} is not one of {SIMILARITY_METHODS}")
    if method == "pearson":
        return np.corrcoef(x)
    if method == "spearman":
        return np.corrcoef(pd.DataFrame(x.T).rank().to_numpy().T)
    return pd.DataFrame(x.T).corr(method="kendall").to_numpy()


def group_codes(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One integer per row, equal where every one of ``columns`` is equal.

    Values are compared as strings, as cytominer-eval casts its metadata to ``str``: a missing value
    is the group "nan", and 0.1 in one row equals 0.1 in another whatever their dtypes.
    """
    keys = df[list(columns)].astype(str).agg("\x1f".join, axis=1)
    return pd.factorize(keys)[0]


def replicate_reproducibility(
    df: pd.DataFrame,
    features: Sequence[str],
    replicate_groups: Sequence[str],
    quantiles: Sequence[float] = (0.5, 0.95),
    method: str = "pearson",
) -> dict[float, float]:
    """{q: fraction of replicate pairs more similar than the q-quantile of non-replicate pairs}.

    Pairs are the upper triangle of the profiles' correlation matrix (each unordered pair once, no
    self-pairs); a replicate pair shares every ``replicate_groups`` value. The quantile is pandas'
    linear-interpolation quantile of the non-replicate pairs' correlations and "more similar" is
    strict (>), as in cytominer-eval. A table with no replicate pair is a ValueError.
    """
    require_columns(df, replicate_groups, "replicate group")
    for q in quantiles:
        if not 0 < q <= 1:
            raise ValueError(f"replicate_reproducibility quantile {q} is not in (0, 1]")
    sim = similarity_matrix(feature_matrix(df, features), method)
    codes = group_codes(df, replicate_groups)
    upper = np.triu_indices(len(codes), k=1)
    values = sim[upper]
    same = codes[upper[0]] == codes[upper[1]]
    if not same.any():
        raise ValueError(f"no two profiles share their replicate group {list(replicate_groups)}: nothing to reproduce")
    replicate, other = values[same], values[~same]
    return {float(q): float((replicate > np.quantile(other, q)).mean()) for q in quantiles}


def precision_at_k(
    df: pd.DataFrame,
    features: Sequence[str],
    replicate_groups: Sequence[str],
    k: int | Sequence[int],
    method: str = "pearson",
) -> pd.DataFrame:
    """Per replicate group and k: precision and recall of its k most similar pairs (cytominer-eval).

    Every ordered pair (a, b), a != b, belongs to a's group; a group's pairs are ranked by
    correlation and the top k taken (all of them when the group has fewer). precision = replicate
    pairs among them / k, recall = those / all the group's replicate pairs (NaN for a group of one).
    Returns one row per (group, k) with the ``replicate_groups`` columns, ``k``, ``precision``, ``recall``.
    """
    require_columns(df, replicate_groups, "replicate group")
    ks = [k] if isinstance(k, int) else list(k)
    if any(int(v) < 1 for v in ks):
        raise ValueError(f"precision_at_k needs k >= 1, got {ks}")
    sim = similarity_matrix(feature_matrix(df, features), method)
    codes = group_codes(df, replicate_groups)
    n = len(codes)
    a, b = np.nonzero(~np.eye(n, dtype=bool))
    order = np.lexsort((-sim[a, b], codes[a]))  # by group, then most similar first
    hit = (codes[a] == codes[b])[order]
    starts = np.searchsorted(codes[a][order], np.arange(codes.max() + 1))
    ends = np.append(starts[1:], len(order))
    first_row = pd.Series(np.arange(n)).groupby(codes).first().to_numpy()
    rows = []
    for g in range(codes.max() + 1):
        hits = hit[starts[g] : ends[g]]
        relevant = int(hits.sum())
        for kk in ks:
            found = int(hits[: int(kk)].sum())
            rows.append(
                {
                    **df.iloc[first_row[g]][list(replicate_groups)].to_dict(),
                    "k": int(kk),
                    "precision": found / int(kk),
                    "recall": found / relevant if relevant else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def replicate_medians(sim: np.ndarray, codes: np.ndarray) -> dict[int, float]:
    """{group code: median off-diagonal correlation among its wells} for groups of two wells or more."""
    out = {}
    for g in np.unique(codes):
        idx = np.nonzero(codes == g)[0]
        if len(idx) > 1:
            block = sim[np.ix_(idx, idx)]
            out[int(g)] = float(np.median(block[np.triu_indices(len(idx), k=1)]))
    return out


def null_medians(sim: np.ndarray, codes: np.ndarray, size: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Median correlations of ``n_samples`` random groups of ``size`` wells from ``size`` distinct groups.

    Each random group draws ``size`` distinct perturbations uniformly, then one well of each.
    """
    groups = np.unique(codes)
    members = [np.nonzero(codes == g)[0] for g in groups]
    upper = np.triu_indices(size, k=1)
    out = np.empty(n_samples)
    for s in range(n_samples):
        picked = rng.choice(len(groups), size=size, replace=False)
        wells = np.array([rng.choice(members[p]) for p in picked])
        out[s] = np.median(sim[np.ix_(wells, wells)][upper])
    return out


def percent_replicating(
    df: pd.DataFrame,
    features: Sequence[str],
    perturbation_columns: Sequence[str],
    n_samples: int = 1000,
    percentile: float = 95.0,
    seed: int = 0,
    method: str = "pearson",
) -> dict:
    """Fraction of perturbations whose median replicate correlation beats the null's 95th percentile.

    ``df`` holds the treated wells (leave the controls out: they are no perturbation to replicate).
    A perturbation (one value of ``perturbation_columns``) with s >= 2 wells is compared with the
    ``percentile`` of ``n_samples`` medians of random groups of s wells drawn from s distinct
    perturbations (one null per group size, seeded); it replicates when its median is strictly
    greater. Perturbations with one well are not scored. Returns {"percent_replicating",
    "medians" and "replicating" (per perturbation, Series), "thresholds" ({size: threshold}),
    "n_perturbations"}.
    """
    require_columns(df, perturbation_columns, "perturbation")
    sim = similarity_matrix(feature_matrix(df, features), method)
    codes = group_codes(df, perturbation_columns)
    medians = replicate_medians(sim, codes)
    if not medians:
        raise ValueError(
            f"no perturbation in {list(perturbation_columns)} has two wells: percent replicating needs replicates"
        )
    sizes = {g: int((codes == g).sum()) for g in medians}
    n_groups = len(np.unique(codes))
    if max(sizes.values()) > n_groups:
        raise ValueError(
            f"a perturbation has {max(sizes.values())} wells but the table has only {n_groups} "
            "perturbations: no null group of distinct perturbations that large"
        )
    rng = np.random.default_rng(seed)
    thresholds = {
        s: float(np.percentile(null_medians(sim, codes, s, n_samples, rng), percentile))
        for s in sorted(set(sizes.values()))
    }
    passed = [medians[g] > thresholds[sizes[g]] for g in medians]
    labels = df[list(perturbation_columns)].astype(str).agg(" / ".join, axis=1).to_numpy()
    first = {int(c): labels[i] for i, c in reversed(list(enumerate(codes)))}
    return {
        "percent_replicating": float(np.mean(passed)),
        "medians": pd.Series({first[g]: v for g, v in medians.items()}, name="median_replicate_correlation"),
        "replicating": pd.Series({first[g]: bool(ok) for g, ok in zip(medians, passed)}, name="replicating"),
        "thresholds": thresholds,
        "n_perturbations": len(medians),
    }
