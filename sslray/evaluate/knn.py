"""Weighted k-nearest-neighbour classification of tile embeddings, in numpy (no Ray).

The protocol is DINO's (Caron et al. 2021; k = 20, T = 0.07 there): cosine similarity between
L2-normalised embeddings, the k most similar training tiles vote for their class with weight
exp(similarity / T), and the votes normalised to sum to one are the class probabilities
(docs/protocols.md, "Linear probe on tile embeddings", which lists kNN accuracy). No model is
fitted, so the score measures the embedding space itself, not what a classifier makes of it.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CHUNK = 1024
"""Test rows scored at a time: the similarity block is ``chunk x n_train`` float32, so 100k training
tiles cost about 400 MB, however large the test set."""


def knn_proba(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, temperature: float = 0.07, *,
              n_classes: int | None = None, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """(n_test, n_classes) class probabilities of ``test_x`` from its ``k`` nearest training tiles.

    ``train_y`` holds class indices in ``[0, n_classes)`` (default: ``train_y.max() + 1``).
    """
    train_y = np.asarray(train_y)
    n_classes = int(train_y.max()) + 1 if n_classes is None else int(n_classes)
    _check(train_x, train_y, test_x, k, temperature, n_classes, chunk)
    train = _unit_rows(train_x)
    out = np.empty((len(test_x), n_classes), dtype=np.float64)
    for start in range(0, len(test_x), chunk):
        sims = _unit_rows(test_x[start:start + chunk]) @ train.T
        out[start:start + chunk] = _vote(sims, train_y, k, temperature, n_classes)
    return out


def _check(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, temperature: float,
           n_classes: int, chunk: int) -> None:
    """Refuse inputs that would give silently wrong votes (k beyond the training set, labels outside the classes)."""
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_x {train_x.shape} and test_x {test_x.shape} must be 2-D of the same width")
    if len(train_y) != len(train_x):
        raise ValueError(f"train_y has {len(train_y)} labels for {len(train_x)} training rows")
    if not 1 <= k <= len(train_x):
        raise ValueError(f"k={k} must be between 1 and the number of training tiles ({len(train_x)})")
    if temperature <= 0 or chunk < 1:
        raise ValueError(f"temperature ({temperature}) and chunk ({chunk}) must be positive")
    if len(train_y) and (train_y.min() < 0 or train_y.max() >= n_classes):
        raise ValueError(f"train_y must hold class indices in [0, {n_classes}), got {train_y.min()}..{train_y.max()}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero: it is equally far from everything)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _vote(sims: np.ndarray, train_y: np.ndarray, k: int, temperature: float, n_classes: int) -> np.ndarray:
    """Each row's k largest similarities vote exp(sim / T) for their tile's class; votes sum to one."""
    if k < sims.shape[1]:
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(sims.shape[1]), (len(sims), k))
    top_sims = np.take_along_axis(sims, top, axis=1).astype(np.float64)
    weights = np.exp((top_sims - top_sims.max(axis=1, keepdims=True)) / temperature)  # shifted: no overflow at small T
    votes = np.zeros((len(sims), n_classes), dtype=np.float64)
    np.add.at(votes, (np.repeat(np.arange(len(sims)), k), train_y[top].reshape(-1)), weights.reshape(-1))
    return votes / votes.sum(axis=1, keepdims=True)
