"""Backbones come from timm, with any number of input channels.

timm gives every architecture the same interface (``num_features``, ``forward_features``,
``forward_head``) and ``in_chans`` support, so sslray never hand-writes a ViT. A ViT is
created with ``dynamic_img_size=True`` so one network sees 224-px global and 96-px local
crops (position embeddings are interpolated), as multi-crop SSL needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from torch import nn


@dataclass
class BackboneConfig:
    """``name`` is any timm model name; ``kwargs`` go to ``timm.create_model``."""

    name: str = "vit_small_patch16_224"
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # local path or URL of a state dict (see sslray.models.weights)

    def __post_init__(self) -> None:
        if not timm.is_model(self.name):
            raise ValueError(f"model.name: {self.name!r} is not a timm model (see timm.list_models())")


def create_backbone(cfg: BackboneConfig, in_chans: int) -> nn.Module:
    """A headless timm model whose ``forward`` returns one pooled feature vector per image."""
    kwargs = dict(cfg.kwargs)
    if is_vit(cfg.name):
        kwargs.setdefault("dynamic_img_size", True)
    model = timm.create_model(cfg.name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    if cfg.weights:
        from sslray.models.weights import load_backbone_weights

        load_backbone_weights(model, cfg.weights)
    return model


def is_vit(name: str) -> bool:
    return name.startswith(("vit_", "deit", "eva", "beit"))


def feature_dim(model: nn.Module) -> int:
    return int(model.num_features)


@torch.no_grad()
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
