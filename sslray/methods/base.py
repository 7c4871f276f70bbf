"""The contract between an SSL method and the (method-agnostic) training loop.

A method is an ``nn.Module`` owning everything specific to it: heads, teacher networks,
view generation and the loss. The loop only ever calls, per step::

    views = method.make_views(images)          # tensor ops, on the training device
    out = method(views, step)                  # -> StepOutput(loss, metrics)
    loss.backward(); method.before_optimizer_step(step); optimizer.step()
    method.after_optimizer_step(step)          # EMA teachers, centers...

and ``method.encoder()`` to get the network whose features are exported. Calling the
module itself (not a helper) for the loss keeps DDP's gradient hooks in charge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from sslray.models.backbones import BackboneConfig, create_backbone, feature_dim

TILES = "tiles"  # batches of raw uint8 tiles (B, C, H, W), normalised by the step
EMBEDDING_GRIDS = "embedding_grids"  # float grids of tile embeddings (B, H, W, D), NaN where empty


@dataclass
class StepOutput:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    # (N, D) embeddings of one view, as the encoder exports them, for the collapse monitor
    features: torch.Tensor | None = None


@dataclass
class Schedule:
    """Step bookkeeping every method needs for its schedules."""

    total_steps: int
    steps_per_epoch: int = 1

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        self.steps_per_epoch = max(1, self.steps_per_epoch)


class SSLMethod(nn.Module):
    """Base class; subclasses set ``Config`` (a dataclass) and implement the hooks."""

    Config: ClassVar[type]
    name: ClassVar[str]
    # True: the encoder takes one channel (in_chans=1) and a C-channel image is embedded
    # channel by channel, the C vectors concatenated in channel order (uniDINO).
    channel_agnostic: ClassVar[bool] = False
    # True: training rows are magnification pairs (B, 2, C, H, W), drawn by ``Config.policy``.
    needs_pairs: ClassVar[bool] = False
    # What a training batch is: TILES (from a tile store) or EMBEDDING_GRIDS (from an embeddings table).
    input_kind: ClassVar[str] = TILES
    doc_page: ClassVar[str] = ""  # docs/methods/<doc_page>.md when not named after the method

    def __init__(self, backbone: nn.Module, cfg: Any, schedule: Schedule) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.schedule = schedule
        self.embed_dim = feature_dim(backbone)

    @classmethod
    def build_backbone(cls, model_cfg: BackboneConfig, method_cfg: Any, in_chans: int) -> nn.Module:
        """The encoder to train: a timm backbone on ``in_chans`` input channels (or, for a method
        with its own encoder, features per token); such a method overrides this."""
        return create_backbone(model_cfg, in_chans)

    def make_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], step: int) -> StepOutput:  # noqa: D401
        raise NotImplementedError

    def before_optimizer_step(self, step: int) -> None:
        """Called after backward, before the optimizer step (e.g. to freeze a layer)."""

    def after_optimizer_step(self, step: int) -> None:
        """Called after the optimizer step (e.g. EMA teacher update)."""

    def encoder(self) -> nn.Module:
        """The network whose pooled output is the exported embedding."""
        return self.backbone

    def trainable_modules(self) -> list[nn.Module]:
        """Modules the optimizer updates; teachers are excluded."""
        return [self.backbone]
