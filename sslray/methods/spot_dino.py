"""Spot DINO: second-level self-distillation on grids of tile embeddings.

Atarsaikhan et al. 2025 (bioRxiv 10.1101/2025.03.05.640729) aggregate the first-level tile
embeddings of each TMA spot with a second self-supervised model. Here that model is the
``SpotEncoder`` (a small ViT, one token per tile, no position embedding) trained with DINO
(Caron et al. 2021): the views of a spot are random windows of its tile grid (two global,
``n_local`` local) with token dropout (``spot_views``); the student sees all of them, the EMA
teacher the global ones. Head, loss, centring, EMA, temperature schedule and last-layer
freezing are ``sslray.methods.dino``'s, inherited: only the views and the encoder differ.

Defaults follow Lightly's DINO (the seed's code base) for small data: docs/methods/spot_aggregator.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from timm.layers import DropPath
from torch import nn

from sslray.methods.base import EMBEDDING_GRIDS, Schedule
from sslray.methods.dino import DINO, DINOConfig
from sslray.methods.registry import register_method
from sslray.methods.spot_views import SpotViewConfig, grid_views
from sslray.models.spot_encoder import SpotEncoder, SpotModelConfig

ENCODER_NAME = "spot_encoder"  # the model name a spot_dino checkpoint records in sslray.json


@dataclass
class SpotDINOConfig(DINOConfig):
    """DINO's head and loss settings with small-data defaults, the spot encoder and the grid views."""

    out_dim: int = 2048
    hidden_dim: int = 512
    bottleneck_dim: int = 64
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 0
    teacher_momentum: float = 0.996
    freeze_last_layer_epochs: float = 1
    model: SpotModelConfig = field(default_factory=SpotModelConfig)
    views: SpotViewConfig = field(default_factory=SpotViewConfig)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_layers < 1:
            raise ValueError(f"method.head_layers must be >= 1, got {self.head_layers}")
        if self.warmup_teacher_temp_epochs < 0 or self.freeze_last_layer_epochs < 0:
            raise ValueError("method.warmup_teacher_temp_epochs and method.freeze_last_layer_epochs must be >= 0")


@register_method("spot_dino")
class SpotDINO(DINO):
    """DINO whose input is a batch of spot grids (B, H, W, D) and whose encoder is a ``SpotEncoder``."""

    Config = SpotDINOConfig
    summary = "second-level SSL: a small ViT over each spot's grid of tile embeddings, DINO-trained (sslray aggregate)"
    doc_page = "spot_aggregator"
    input_kind = EMBEDDING_GRIDS

    def __init__(self, backbone: nn.Module, cfg: SpotDINOConfig, schedule: Schedule) -> None:
        """The teacher runs without stochastic depth, as DINO's reference code builds it; otherwise
        it runs as the student does (a BatchNorm head normalises with batch statistics in both)."""
        super().__init__(backbone, cfg, schedule)
        for module in self.teacher_backbone.modules():
            if isinstance(module, DropPath):
                module.drop_prob = 0.0

    @classmethod
    def build_backbone(cls, model_cfg: Any, method_cfg: SpotDINOConfig, in_chans: int) -> nn.Module:
        """A ``SpotEncoder`` over ``in_chans``-dimensional tile embeddings; ``model_cfg`` (a timm
        backbone) does not apply."""
        return SpotEncoder(in_chans, method_cfg.model)

    def make_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Grid windows drawn with a generator seeded from torch's, so ``torch.manual_seed`` (once
        per worker) makes the views reproducible as it does the image crops."""
        rng = np.random.default_rng(int(torch.randint(2**62, (1,)).item()))
        return grid_views(images.float(), self.cfg.views, rng)
