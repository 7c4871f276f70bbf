"""The last block's class-token attention of a timm ViT, one map per head (Caron et al. 2021, DINO).

DINO's pictures (and the per-head maps of SSL for multiplexed imaging) are the softmax row of
the class token in the last block, ``softmax(q_cls k^T / sqrt(d))``, over the patch tokens,
one map per head: 6 for ViT-S, 12 for ViT-B. timm computes attention with PyTorch's fused
kernel, which never materialises that matrix, so it is recomputed here from the block's own
``attn.qkv`` (and ``q_norm``/``k_norm``) applied to the block's normed input, captured by a
forward pre-hook while the encoder runs its usual forward. Register tokens (timm
``num_prefix_tokens`` counts the class token and the registers) are left out of the map.

``tile_attention`` feeds tiles exactly as embedding does (``sslray.infer.encoder.encode``); a
channel-agnostic checkpoint encodes every channel as its own image, so each channel gets its
own set of maps. No Ray.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sslray.artifacts.checkpoint import CheckpointMeta
from sslray.infer.encoder import encode
from sslray.models.vit_adapter import patch_grid


def supports_attention(encoder: nn.Module) -> bool:
    """A timm ViT with a class token and a fused ``qkv`` in its last block."""
    return (isinstance(encoder, VisionTransformer) and bool(encoder.has_class_token)
            and hasattr(encoder.blocks[-1].attn, "qkv"))


def cls_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, N, D) normed block input -> (B, heads, N): the class token's attention over all N tokens.

    The same steps as timm's unfused ``Attention.forward`` up to the softmax (each row sums to 1).
    """
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])  # (B, heads, N, head_dim)
    logits = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)  # the class token is token 0
    return logits.float().softmax(dim=-1)[:, :, 0]


@contextmanager
def last_block_input(vit: VisionTransformer) -> Iterator[list[torch.Tensor]]:
    """While the block runs, the input its attention sees (``norm1`` of the tokens) is appended."""
    seen: list[torch.Tensor] = []
    handle = vit.blocks[-1].attn.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        yield seen
    finally:
        handle.remove()


@torch.no_grad()
def patch_attention(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Network input (B, C, H, W) -> (B, heads, h, w): the class token's last-block attention on the patch grid."""
    _require(vit)
    with last_block_input(vit) as seen:
        vit(x)
    return _on_grid(vit, cls_attention(vit.blocks[-1].attn, seen[-1].float()), x.shape[-2:])


def _require(vit: nn.Module) -> None:
    if not supports_attention(vit):
        raise ValueError(f"{type(vit).__name__} has no class-token attention to show (a timm VisionTransformer "
                         "with a class token is needed)")


def _on_grid(vit: VisionTransformer, row: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = patch_grid(vit, size)
    patches = row[:, :, int(vit.num_prefix_tokens):]
    if patches.shape[-1] != h * w:
        raise ValueError(f"the last block saw {patches.shape[-1]} patch tokens, not the {h}x{w} grid of a "
                         f"{tuple(size)} input")
    return patches.reshape(*row.shape[:2], h, w)


@torch.no_grad()
def tile_attention(vit: VisionTransformer, tiles: torch.Tensor, meta: CheckpointMeta,
                   device: torch.device) -> np.ndarray:
    """Raw tiles (B, C, T, T) -> (B, C', heads, h, w) float32 maps, fed as the checkpoint prescribes.

    C' is C for a channel-agnostic checkpoint (one map set per channel image), else 1.
    """
    _require(vit)
    with last_block_input(vit) as seen:
        encode(vit, tiles.to(device), meta, device)
    size = (meta.image_size, meta.image_size)
    maps = _on_grid(vit, cls_attention(vit.blocks[-1].attn, seen[-1].float()), size)
    return maps.reshape(len(tiles), -1, *maps.shape[1:]).cpu().numpy().astype(np.float32)
