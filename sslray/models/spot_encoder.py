"""The spot encoder: a small ViT over tile embeddings, one token per tile, no positions.

Second level of the SSL-Multiplexed-Imaging framework (Atarsaikhan et al. 2025,
bioRxiv 10.1101/2025.03.05.640729): the first-level embeddings of a spot's patches are laid
out on the spot's grid and read by a ViT whose "patches" are 1x1 cells, i.e. the tile
embeddings themselves, projected to the model width. Without a position embedding
self-attention is permutation-equivariant, so the CLS output is a function of the *set* of
tiles: invariant to tile order, and, with padded tokens masked out of every attention row,
to padding. That lets spots of any size and shape share a batch.

The encoder of the ``spot_dino`` method (``sslray.methods.spot_dino``); it lives with the
models so the method imports it without the aggregation stage (docs/methods/spot_aggregator.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import Block
from torch import nn


@dataclass
class SpotModelConfig:
    dim: int = 192  # ViT-Tiny width
    depth: int = 4
    num_heads: int = 3  # head dim 64, as in every timm ViT
    mlp_ratio: float = 4.0
    drop_path: float = 0.1  # DINO's rate for ViT-S/16
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        if self.dim < 1 or self.depth < 1 or self.num_heads < 1:
            raise ValueError(f"model.dim, model.depth and model.num_heads must be >= 1, got "
                             f"{self.dim}, {self.depth}, {self.num_heads}")
        if self.dim % self.num_heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by model.num_heads ({self.num_heads})")
        if self.mlp_ratio <= 0 or not 0 <= self.drop_path < 1:
            raise ValueError("model.mlp_ratio must be > 0 and model.drop_path in [0, 1)")


class SpotEncoder(nn.Module):
    """(B, N, D) tile embeddings + (B, N) validity mask -> (B, dim) CLS embedding.

    Without a mask, NaN tokens are the padding: the training views travel as one tensor each
    (``sslray.methods.spot_views``), so the mask is read off the tokens themselves.

    timm's ``Block`` (1.0.31) forwards ``attn_mask`` to ``Attention``, which hands a boolean
    mask (True = may attend) to ``F.scaled_dot_product_attention`` or turns it into an
    additive -inf bias on the slow path; the same mask therefore works fused or not.
    """

    def __init__(self, in_dim: int, cfg: SpotModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or SpotModelConfig()
        self.in_dim = in_dim
        self.embed_dim = cfg.dim
        self.num_features = cfg.dim  # what sslray.models.backbones.feature_dim reads, as on timm models
        self.token_embed = nn.Linear(in_dim, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, drop_path=rate)
            for rate in rates
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_linear)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = tokens.shape
        if mask is None and tokens.isnan().any():
            mask = ~tokens.isnan().any(-1)
        if mask is not None:  # padded slots may hold anything (even NaN): zero them before they meet a weight
            tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.token_embed(tokens)], dim=1)
        attn_mask = None
        if mask is not None:
            keep = torch.cat([mask.new_ones(b, 1), mask.bool()], dim=1)
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, 1 + N): every query ignores padded keys
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.norm(x[:, 0])


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
