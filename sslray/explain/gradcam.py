"""Grad-CAM (Selvaraju et al. 2017) of a linear evaluation head's class logit through a CNN encoder.

A CNN has no attention to show; what it can show is which part of a tile raised a class's
score. The score is the logit of the head ``sslray evaluate --protocol linear`` fitted on the
embeddings (``head.safetensors``), applied to the embedding exactly as the table held it
(L2-normalised per channel block when it was). Its gradient with respect to the last conv
stage's activations A (timm's ``feature_info[-1]``: ``layer4`` of a ResNet), averaged over
the positions, weighs A's channels: ``CAM = ReLU(sum_k mean(dy/dA_k) A_k)``.

Without a class, each tile is explained for the class the head predicts for it (the paper's
default). Maps are not rescaled per tile, so stitched tiles stay comparable. No Ray.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sslray.artifacts.checkpoint import CheckpointMeta
from sslray.artifacts.linear_head import LinearHead
from sslray.infer.encoder import encode
from sslray.models.backbones import feature_dim


def last_stage(encoder: nn.Module) -> nn.Module:
    """The module whose output is the last conv stage, as timm's ``feature_info`` names it."""
    info = getattr(encoder, "feature_info", None)
    if not info:
        raise ValueError(f"{type(encoder).__name__} lists no feature stages (timm feature_info); Grad-CAM needs a "
                         "timm CNN such as a ResNet")
    return encoder.get_submodule(info[-1]["module"])


def head_logits(features: torch.Tensor, head: LinearHead, embed_dim: int) -> torch.Tensor:
    """(B, D) encoder output -> (B, K) logits, the features first made what the probe saw."""
    if features.shape[1] != head.dim:
        raise ValueError(f"the head takes {head.dim}-d embeddings but the encoder gives {features.shape[1]}-d ones; "
                         "use the head fitted on this checkpoint's embeddings")
    if head.l2_normalized:  # per channel block, as embedding normalises them
        blocks = features.reshape(len(features), -1, embed_dim)
        features = nn.functional.normalize(blocks, dim=-1).reshape(len(features), -1)
    weight = torch.as_tensor(head.weight, device=features.device)
    return features @ weight.T + torch.as_tensor(head.bias, device=features.device)


def tile_gradcam(encoder: nn.Module, tiles: torch.Tensor, meta: CheckpointMeta, head: LinearHead,
                 class_index: int | None, device: torch.device,
                 layer: nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw tiles (B, C, T, T) -> ((B, C', h, w) float32 CAMs, (B,) the explained class of each tile).

    C' is C for a channel-agnostic checkpoint (the logit's gradient reaches every channel image
    through its own block), else 1. ``layer``: the activations to explain (default ``last_stage``).
    """
    layer = layer or last_stage(encoder)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        with torch.enable_grad():
            logits = head_logits(encode(encoder, tiles.to(device), meta, device),
                                 head, meta.embed_dim or feature_dim(encoder))
            target = logits.argmax(dim=1) if class_index is None else torch.full_like(logits[:, 0], class_index,
                                                                                      dtype=torch.long)
            score = logits.gather(1, target[:, None]).sum()  # tiles are independent: one backward for all
            (grad,) = torch.autograd.grad(score, seen[-1])
    finally:
        handle.remove()
    activations = seen[-1].detach().float()
    if activations.ndim != 4:
        raise ValueError(f"{type(layer).__name__} gives {activations.ndim}-d activations; Grad-CAM needs a conv "
                         "stage's (N, K, h, w)")
    weights = grad.float().mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * activations).sum(dim=1))
    return cams.reshape(len(tiles), -1, *cams.shape[1:]).cpu().numpy(), target.cpu().numpy()
