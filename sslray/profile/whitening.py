"""The whitening transforms of the normalisation steps: ZCA (spherize) and PCA whitening (TVN), in numpy.

``zca_fit`` computes pycytominer's ``Spherize`` transform (pycytominer.operations.transform) the
same way (without forming its d x d matrix), so ``sslray profile`` and a pycytominer pipeline give the same profiles (tested to 1e-6):
standardise (ZCA-cor: the whitening of the correlation matrix, pycytominer's default) or only
centre (ZCA), take the SVD of the fitted rows, and when there are no more rows than features pad
the singular values past the rank with the last non-zero one, so the directions the controls do
not span are scaled like their weakest one instead of blowing up. ε (1e-6) is added to every
singular value. The ZCA rotation back (``W @ Vt``) keeps each output column aligned with its
input feature, which is why spherized features keep their names (and their channel).

``pca_whitening_fit`` is the whitening of typical variation normalisation (Ando et al. 2017,
"Improving phenotypic measurements in high-content imaging screens", bioRxiv 161422): principal
axes of the control profiles, each scaled to unit variance (scikit-learn's ``PCA(whiten=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Whitening:
    """A fitted whitening: ``z = (x - mean) / scale``, then ``(z @ basis) * weights`` (PCA whitening,
    ``tail`` None), or for ZCA that rotated back, ``+ tail`` times the part of ``z`` outside the basis.

    Kept as a thin basis (d x r) rather than a d x d matrix: with 1,920 features (5 channels of a
    ViT-S) and a few dozen controls, r is tens, so fitting and applying cost O(n·d·r), not O(d³).
    """

    mean: np.ndarray
    scale: np.ndarray
    basis: np.ndarray
    weights: np.ndarray
    tail: float | None = None

    def apply(self, values: np.ndarray) -> np.ndarray:
        return self.transform((np.asarray(values, dtype=np.float64) - self.mean) / self.scale)

    def transform(self, z: np.ndarray) -> np.ndarray:
        coords = z @ self.basis
        if self.tail is None:
            return coords * self.weights
        return (coords * self.weights) @ self.basis.T + (z - coords @ self.basis.T) * self.tail

    def matrix(self) -> np.ndarray:
        """The whitening as a matrix acting on ``z`` (d x d for ZCA, d x k for PCA whitening)."""
        return self.transform(np.eye(len(self.mean)))


def zca_fit(values: np.ndarray, method: str = "ZCA-cor", epsilon: float = 1e-6, center: bool = True) -> Whitening:
    """The ZCA (``ZCA``) or ZCA-cor (``ZCA-cor``) whitening of ``values`` (rows: the fitted profiles)."""
    if method not in ("ZCA", "ZCA-cor"):
        raise ValueError(f"spherize method must be ZCA-cor or ZCA, got {method!r}")
    if method == "ZCA-cor" and not center:
        raise ValueError("spherize: ZCA-cor whitens the correlation matrix, which is centred; center must be true")
    values = np.asarray(values, dtype=np.float64)
    n, d = values.shape
    mean = values.mean(axis=0) if center else np.zeros(d)
    scale = values.std(axis=0) if method == "ZCA-cor" else np.ones(d)
    _, sigma, vt = np.linalg.svd((values - mean) / scale, full_matrices=False)
    rank = int((sigma > sigma.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps).sum())  # as matrix_rank
    if not (rank == d or (center and rank == n - 1) or (not center and rank == n)):
        raise ValueError(f"spherize: the {n} fitted profiles of {d} features have rank {rank}; some features are "
                         "linear combinations of others (drop them, or fit on more profiles)")
    root = np.sqrt(n - 1)
    tail = root / (sigma[rank - 1] + epsilon) if rank < d else 0.0  # pycytominer pads sigma with sigma[r - 1]
    return Whitening(mean, scale, vt[:rank].T, root / (sigma[:rank] + epsilon), tail)


def pca_whitening_fit(values: np.ndarray, n_components: int | None = None) -> Whitening:
    """PCA whitening of ``values``: the first ``n_components`` principal axes (default: all the centred
    rows span, min(n - 1, d)), each divided by its standard deviation (ddof 1, as scikit-learn)."""
    values = np.asarray(values, dtype=np.float64)
    n, d = values.shape
    if n < 2:
        raise ValueError(f"tvn: PCA whitening needs at least 2 fitted profiles, got {n}")
    k = min(n - 1, d) if n_components is None else n_components
    if not 1 <= k <= min(n - 1, d):
        raise ValueError(f"tvn: n_components must be between 1 and {min(n - 1, d)} (fitted profiles - 1, features), "
                         f"got {k}")
    mean = values.mean(axis=0)
    _, sigma, vt = np.linalg.svd(values - mean, full_matrices=False)
    std = sigma[:k] / np.sqrt(n - 1)
    if std[-1] <= 1e-12 * std[0]:
        raise ValueError(f"tvn: the fitted profiles span fewer than {k} directions; lower n_components")
    return Whitening(mean, np.ones(d), vt[:k].T, 1.0 / std)
