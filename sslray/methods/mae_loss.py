"""MAE's target and loss: images as rows of patch pixels, and the error on the removed patches.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (arXiv:2111.06377),
Section 3 ("Reconstruction target"); the layout and the per-patch normalisation follow the
reference implementation (github.com/facebookresearch/mae, ``models_mae.py``: ``patchify``,
``unpatchify``, ``forward_loss`` with ``norm_pix_loss``). Pure functions of tensors, so they
are tested on hand-made images.
"""

from __future__ import annotations

import torch


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, patch*patch*C), patches in row-major grid order.

    Each patch is flattened as (row, column, channel), the layout of the MAE reference
    implementation, so the decoder predicts a patch's channels side by side. The grid is
    that of a stride-``patch`` convolution, i.e. of the ViT's patch embedding.
    """
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {(h, w)} is not a multiple of the patch size {patch}")
    gh, gw = h // patch, w // patch
    x = images.reshape(b, c, gh, patch, gw, patch)
    x = x.permute(0, 2, 4, 3, 5, 1)  # b, gh, gw, p, q, c
    return x.reshape(b, gh * gw, patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Inverse of :func:`patchify`; ``grid`` (rows, columns) defaults to a square grid."""
    b, n, d = patches.shape
    if grid is None:
        side = round(n**0.5)
        grid = (side, side)
    gh, gw = grid
    if gh * gw != n or d % (patch * patch):
        raise ValueError(f"{n} patches of {d} values do not fit a {grid} grid of {patch}x{patch} patches")
    c = d // (patch * patch)
    x = patches.reshape(b, gh, gw, patch, patch, c)
    x = x.permute(0, 5, 1, 3, 2, 4)  # b, c, gh, p, gw, q
    return x.reshape(b, c, gh * patch, gw * patch)


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch to mean 0 and (unbiased) variance 1 over its pixels, as MAE's ``norm_pix_loss``."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Mean squared error over the pixels of each removed patch, averaged over removed patches.

    ``pred`` and ``target`` are (B, L, P) (``target`` from :func:`patchify`), ``mask`` is
    (B, L), True/1 where a patch was removed. Visible patches do not count: predicting
    them is trivial and the paper found it hurts. Computed in float32.
    """
    target = target.float()
    if norm_pix:
        target = normalize_patches(target)
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)
    weights = mask.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum().clamp_min(1.0)
