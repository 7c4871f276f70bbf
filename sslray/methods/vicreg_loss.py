"""The VICReg criterion: invariance, variance and covariance between batches of embeddings.

Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022 (arXiv:2105.04906): invariance is the MSE
between paired embeddings; variance (a hinge keeping every dimension's std above 1 across
the batch) and covariance (decorrelated dimensions) are what prevent collapse without
negatives. The reductions follow VICRegL's code (github.com/facebookresearch/VICRegL,
``main_vicregl.py``), which averages the two branches' variance and covariance terms. VICRegL
applies it to pooled embeddings (:func:`global_loss`) and to matched local features
(:mod:`sslray.methods.vicregl_local`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslray.methods.simclr import gather_with_grad


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean hinge ``relu(1 - std)`` of every dimension's std over dim 0 (gamma = 1)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances over dim 0, divided by the dimension.

    ``z`` is (N, D), or (N, K, D) for K matched locations: then one covariance per location
    slot over the N images, averaged over the slots (as the reference does for local maps).
    """
    x = (z - z.mean(dim=0, keepdim=True)).movedim(0, -2)  # (..., N, D)
    n, d = x.shape[-2:]
    cov = x.transpose(-1, -2) @ x / (n - 1)
    off_diagonal = cov.pow(2).sum((-2, -1)) - cov.diagonal(dim1=-2, dim2=-1).pow(2).sum(-1)
    return (off_diagonal / d).mean()


def vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, inv: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg between two batches of embeddings, (N, D) or (N, K, D) row-aligned.

    Invariance is the MSE of this rank's pairs; variance and covariance see the global batch
    (rows of every data-parallel rank, gathered with gradients), since their statistics are
    what keeps the embedding from collapsing. Both are averaged over the two branches, the
    VICRegL code's convention (VICReg's sums the two covariance terms, a factor 2 on ``cov``).
    Returns the weighted loss and the unweighted ``inv``/``var``/``cov`` terms.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"vicreg_loss needs row-aligned embeddings, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    invariance = F.mse_loss(z1, z2)
    a, _ = gather_with_grad(z1)
    b, _ = gather_with_grad(z2)
    if a.shape[0] < 2:
        raise ValueError("vicreg_loss needs at least 2 samples for its variance and covariance terms")
    variance = (variance_term(a, eps) + variance_term(b, eps)) / 2
    covariance = (covariance_term(a) + covariance_term(b)) / 2
    loss = inv * invariance + var * variance + cov * covariance
    return loss, {"inv": invariance, "var": variance, "cov": covariance}


def global_loss(
    embeddings: list[torch.Tensor], inv: float, var: float, cov: float, eps: float = 1e-4
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg over several views: invariance between each of the 2 global views and every other
    view, variance/covariance of every view. With two views it is :func:`vicreg_loss`."""
    if len(embeddings) == 2:
        return vicreg_loss(embeddings[0], embeddings[1], inv, var, cov, eps)
    pairs = [(i, j) for i in range(2) for j in range(len(embeddings)) if j != i]
    invariance = torch.stack([F.mse_loss(embeddings[i], embeddings[j]) for i, j in pairs]).mean()
    gathered = [gather_with_grad(z)[0] for z in embeddings]
    variance = torch.stack([variance_term(z, eps) for z in gathered]).mean()
    covariance = torch.stack([covariance_term(z) for z in gathered]).mean()
    loss = inv * invariance + var * variance + cov * covariance
    return loss, {"inv": invariance, "var": variance, "cov": covariance}
