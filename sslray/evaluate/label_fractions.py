"""Label fractions: how a probe does with 1% or 10% of its training labels (no Ray).

As HistoSSLscaling reports it (docs/protocols.md, "Linear probe on tile embeddings"): the outer
training split is subsampled, the probe refit with the regularisation chosen on all labels, and
scored on the same test split; each fraction is drawn with several seeds and reported as mean ± sd.
A subsample keeps or drops whole groups (patients, slides), since half a patient would leak the
rest of its tiles' look into the score, and it is stratified: each class keeps the same share of
the groups it dominates, and at least one group holding it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


def fraction_name(fraction: float, prefix: str = "linear") -> str:
    """``linear_1%`` for 0.01: the model's name in results.json."""
    return f"{prefix}_{fraction * 100:g}%"


def fraction_subsample(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified subsample of whole groups (tiles, without groups) holding about
    ``fraction`` of each class's groups; a group counts for the class most of its tiles carry.

    A class whose share rounds to no group keeps one, and a class no kept group holds gets one
    group holding it, each said in a log line: the probe needs every class.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"a label fraction must be in (0, 1], got {fraction}")
    classes, label_of = np.unique(labels, return_inverse=True)
    unit_of = np.unique(np.arange(len(labels)) if groups is None else groups, return_inverse=True)[1]
    counts = np.zeros((unit_of.max() + 1, len(classes)), dtype=np.int64)
    np.add.at(counts, (unit_of, label_of), 1)
    primary = counts.argmax(axis=1)  # ties: the first class in sorted order
    rng = np.random.default_rng(seed)
    kept, raised = [], []
    for c in range(len(classes)):
        candidates = np.flatnonzero(primary == c)
        share = fraction * len(candidates)
        if len(candidates) and round(share) < 1:
            raised.append(f"{str(classes[c])!r} ({len(candidates)} groups x {fraction:g} = {share:.2g})")
        kept.extend(rng.choice(candidates, min(len(candidates), max(1, round(share))), replace=False))
    for c in np.flatnonzero(counts[kept].sum(axis=0) == 0):  # a class only ever a minority of its groups
        kept.append(rng.choice(np.flatnonzero(counts[:, c] > 0)))
        raised.append(f"{str(classes[c])!r} (the majority of none of the kept groups)")
    if raised:
        log.warning("label fraction %g (seed %d): keeping one group for class(es) %s, more than the fraction gives, "
                    "so that every class is trained on", fraction, seed, ", ".join(raised))
    return np.flatnonzero(np.isin(unit_of, kept))


def fraction_scores(labels: np.ndarray, groups: np.ndarray | None, train: np.ndarray, fraction: float, seeds: list[int],
                    fit_and_score: Callable[[np.ndarray], dict[str, float]]) -> list[tuple[int, dict[str, float]]]:
    """Per seed: (training tiles kept, ``fit_and_score(rows)``) on a subsample of the ``train`` rows."""
    out = []
    for seed in seeds:
        local = fraction_subsample(labels[train], None if groups is None else groups[train], fraction, seed)
        out.append((len(local), fit_and_score(train[local])))
    return out
