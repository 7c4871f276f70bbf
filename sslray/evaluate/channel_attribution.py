"""Channel attribution: which channel's features separate treated wells from the controls.

A channel-agnostic encoder (uniDINO, Morelli et al. 2025) embeds each channel on its own, and its
profiles concatenate one block per channel, named ``<channel>_<index>`` (``DNA_000 ... Mito_383``).
A random forest (scikit-learn, class-balanced) learns to tell a perturbation's wells (or all
treated wells) from the control wells; its impurity (Gini) importances, summed per channel block,
say how much each channel carries the separation. CellPaintSSL reads batch effects off a random
forest's importances the same way. The importances of a forest sum to 1, so the per-channel shares
do too. Pure scikit-learn (no Ray).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from sslray.evaluate.replicates import feature_matrix, require_columns

CHANNEL_FEATURE = re.compile(r"^(?P<channel>[A-Za-z][A-Za-z0-9]*)_(?P<index>\d+)$")


def channel_blocks(features: Sequence[str]) -> dict[str, list[str]]:
    """{channel: its feature columns} when every feature is named ``<channel>_<index>`` and there are
    two channels or more; else {} (CellProfiler features, ``emb_000`` or TVN's ``PC_000``: one "channel")."""
    blocks: dict[str, list[str]] = {}
    for name in features:
        match = CHANNEL_FEATURE.match(str(name))
        if match is None:
            return {}
        blocks.setdefault(match["channel"], []).append(str(name))
    return blocks if len(blocks) > 1 else {}


def forest_importance(
    x: np.ndarray, y: np.ndarray, columns: Sequence[str], blocks: dict[str, list[str]], n_estimators: int, seed: int
) -> pd.Series:
    """The forest's importances separating ``y`` (True: treated), summed per channel block."""
    forest = RandomForestClassifier(n_estimators=n_estimators, class_weight="balanced", random_state=seed, n_jobs=1)
    forest.fit(x, y)
    per_feature = pd.Series(forest.feature_importances_, index=list(columns))
    return pd.Series({channel: float(per_feature[names].sum()) for channel, names in blocks.items()}, name="importance")


def channel_attribution(
    df: pd.DataFrame,
    features: Sequence[str],
    controls: np.ndarray,
    perturbation_column: str | None = None,
    n_estimators: int = 200,
    seed: int = 0,
    max_perturbations: int = 50,
    min_wells: int = 2,
) -> dict:
    """{"overall": Series channel -> importance (all treated wells vs controls), "per_perturbation":
    DataFrame perturbation x channel (each of the ``max_perturbations`` perturbations with the most
    wells, at least ``min_wells``, vs the controls; empty without ``perturbation_column``)}.

    ``controls`` is a boolean mask over ``df``'s rows. Features not named by channel are a ValueError.
    """
    blocks = channel_blocks(features)
    if not blocks:
        raise ValueError(
            "channel attribution needs features named <channel>_<index> (e.g. DNA_000, ER_000) over two "
            f"channels or more; got {list(features)[:4]}..."
        )
    controls = np.asarray(controls, dtype=bool)
    if controls.all() or not controls.any():
        raise ValueError("channel attribution needs both control and treated wells")
    x = feature_matrix(df, features)
    overall = forest_importance(x, ~controls, features, blocks, n_estimators, seed)
    rows = {}
    if perturbation_column:
        require_columns(df, [perturbation_column], "perturbation")
        labels = df[perturbation_column].astype(str).to_numpy()
        counts = pd.Series(labels[~controls]).value_counts()
        for name in counts[counts >= min_wells].index[:max_perturbations]:
            chosen = controls | (labels == name)
            rows[name] = forest_importance(x[chosen], (labels == name)[chosen], features, blocks, n_estimators, seed)
    per_perturbation = (
        pd.DataFrame(rows).T.reindex(columns=list(blocks)) if rows else pd.DataFrame(columns=list(blocks))
    )
    return {"overall": overall, "per_perturbation": per_perturbation}
