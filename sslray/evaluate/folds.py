"""Which bags train, validate and test: nested cross-validation or a given ``split`` column.

Nested CV as HistoSSLscaling runs it (docs/protocols.md, "Nested cross-validation"):
``n_outer`` folds of ``StratifiedGroupKFold(shuffle=True)`` grouped by patient, and inside each
outer training part ``n_inner`` folds the same way. The inner folds choose the configuration and
the epoch count; the outer test fold is touched once. With a ``split`` column there is one outer
fold (train / test) and one inner fold (train / val), or inner CV on train when no bag is "val".

Strata are the class labels, or the event indicator for survival. No Ray import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


@dataclass
class Fold:
    """One outer fold: bag indices for training and testing, and the inner (train, val) pairs
    carved from ``train``, as indices into the whole bag set."""

    train: np.ndarray
    test: np.ndarray
    inner: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def nested_folds(strata: np.ndarray, groups: np.ndarray, n_outer: int = 5, n_inner: int = 5, seed: int = 0,
                 where: str = "bags") -> list[Fold]:
    """``n_outer`` outer folds, each with ``n_inner`` inner folds; no group on both sides of any split."""
    check_foldable(strata, groups, n_outer, where, "outer")
    folds = []
    for k, (train, test) in enumerate(_split(strata, groups, n_outer, seed)):
        check_foldable(strata[train], groups[train], n_inner, f"{where}, outer fold {k}", "inner")
        inner = [(train[a], train[b]) for a, b in _split(strata[train], groups[train], n_inner, seed + 1 + k)]
        folds.append(Fold(np.sort(train), np.sort(test), [(np.sort(a), np.sort(b)) for a, b in inner]))
    return folds


def split_column_folds(split: np.ndarray, strata: np.ndarray, groups: np.ndarray, n_inner: int = 5, seed: int = 0,
                       where: str = "bags") -> list[Fold]:
    """The one outer fold a ``split`` column gives; "val" bags validate, else inner CV on "train"."""
    train, test, val = (np.flatnonzero(split == name) for name in ("train", "test", "val"))
    leaked = set(groups[train].tolist()) & set(groups[test].tolist())
    if leaked:
        raise ValueError(f"{where}: patient(s) {sorted(leaked)[:5]} have bags in both the train and test split")
    if len(val):
        return [Fold(np.sort(np.concatenate([train, val])), test, [(train, val)])]
    check_foldable(strata[train], groups[train], n_inner, f"{where}, train split", "inner")
    inner = [(np.sort(train[a]), np.sort(train[b])) for a, b in _split(strata[train], groups[train], n_inner, seed)]
    return [Fold(train, test, inner)]


def check_foldable(strata: np.ndarray, groups: np.ndarray, n_folds: int, where: str, level: str) -> None:
    """Every stratum needs a group in each fold; say which class is short and by how much."""
    if n_folds < 2:
        raise ValueError(f"{where}: {level} folds must be at least 2, got {n_folds}")
    per_stratum = {str(s): len(np.unique(groups[strata == s])) for s in np.unique(strata)}
    if len(per_stratum) < 2:
        raise ValueError(f"{where}: a single class ({', '.join(per_stratum)}) cannot be split into "
                         f"{level} folds")
    short = {s: n for s, n in per_stratum.items() if n < n_folds}
    if short:
        detail = ", ".join(f"{s!r}: {n}" for s, n in short.items())
        raise ValueError(f"{where}: fewer patients/bags than {level} folds ({n_folds}) in class(es) {detail}; "
                         f"lower n_{level} or add bags")


def _split(strata: np.ndarray, groups: np.ndarray, n_folds: int, seed: int):
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(strata)), strata, groups))


def bag_folds(bags, n_outer: int, n_inner: int, seed: int, where: str) -> list[Fold]:
    """The folds of a ``Bags`` set: its ``split`` column when it has one, else nested CV; strata are
    the classes (the events for survival), groups the patients (each bag its own without them)."""
    strata = bags.labels if bags.labels is not None else bags.event.astype(int)
    groups = bags.patients if bags.patients is not None else bags.ids
    if bags.split is not None:
        return split_column_folds(bags.split, strata, groups, n_inner, seed, where)
    return nested_folds(strata, groups, n_outer, n_inner, seed, where)
