"""The optimiser config of the training step, apart from the rest of the pretraining config.

``train/loop.py`` (the step) needs only this, so the step imports with torch alone: the full
``PretrainConfig`` brings the tracking and storage config, and with them the platform.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OptimConfig:
    """AdamW with DINO's schedules: linear warm-up then cosine for lr, cosine for weight decay."""

    lr: float = 5e-4  # for a global batch of 256; scaled linearly with the real global batch
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0  # 0 disables clipping
    scale_lr_with_batch: bool = True

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.min_lr < 0 or self.warmup_epochs < 0:
            raise ValueError("optim.lr must be > 0, optim.min_lr and optim.warmup_epochs >= 0")
