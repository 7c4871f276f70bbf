"""The method-agnostic optimisation step, in plain torch.

Ray Train glue (sharded data, checkpoints, reporting) lives in ``sslray.train.worker``; this
module knows nothing about Ray, storage or tracking, so the step can be tested on tensors in
memory and timed on a machine with torch and timm only (``tests/test_core_imports.py``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from sslray.data.transforms import normalize, to_unit
from sslray.methods.base import EMBEDDING_GRIDS, TILES, SSLMethod
from sslray.methods.monitor import collapse_metrics
from sslray.train.optim import OptimConfig


def cosine_schedule(step: int, total: int, start: float, end: float, warmup: int = 0, warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup`` steps, then cosine to ``end``."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / warmup
    progress = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def param_groups(modules: list[nn.Module]) -> list[dict]:
    """Biases and norm parameters are not weight-decayed (as in DINO and MAE)."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}]


@dataclass
class StepResult:
    loss: float
    lr: float
    weight_decay: float
    metrics: dict[str, float]


class SSLStep:
    """One optimisation step of any registered method.

    ``model`` is what the loss is computed through (the method, or its DDP wrapper);
    ``method`` is the unwrapped module whose hooks and views are used.
    """

    def __init__(
        self,
        model: nn.Module,
        method: SSLMethod,
        optim: OptimConfig,
        total_steps: int,
        steps_per_epoch: int,
        global_batch: int,
        stats: dict,
        monitor_every: int = 10,
        accumulate: int = 1,
        precision: str = "auto",
    ) -> None:
        """``accumulate``: split each batch into this many micro-batches, one optimiser step per
        batch (memory, not batch statistics: contrastive negatives and BatchNorm see a micro-batch).
        ``precision``: ``bf16`` autocasts the forward pass, ``fp32`` does not, ``auto`` = bf16 on CUDA."""
        self.model = model
        self.method = method
        self.optim_cfg = optim
        self.total_steps = total_steps
        self.warmup_steps = round(optim.warmup_epochs * steps_per_epoch)
        scale = global_batch / 256 if optim.scale_lr_with_batch else 1.0
        self.peak_lr = optim.lr * scale
        self.optimizer = torch.optim.AdamW(param_groups(method.trainable_modules()), lr=self.peak_lr)
        self.scale = float(stats["scale"])
        self.mean = list(stats["mean"])
        self.std = list(stats["std"])
        self.monitor_every = max(monitor_every, 1)
        if accumulate < 1:
            raise ValueError(f"train.accumulate must be >= 1, got {accumulate}")
        if precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision must be auto, bf16 or fp32, got {precision!r}")
        self.accumulate = accumulate
        self.precision = precision
        self.collapse: dict[str, float] = {}  # last collapse-monitor reading, repeated until the next

    def prepare(self, raw: torch.Tensor) -> list[torch.Tensor]:
        """Raw integer tiles -> normalised views, on the tiles' device; embedding grids are views as they are."""
        if getattr(self.method, "input_kind", TILES) == EMBEDDING_GRIDS:  # any module with the hooks may step
            return self.method.make_views(raw)
        images = to_unit(raw, self.scale)
        return [normalize(v, self.mean, self.std) for v in self.method.make_views(images)]

    def __call__(self, raw: torch.Tensor, step: int) -> StepResult:
        lr = cosine_schedule(step, self.total_steps, self.peak_lr, self.optim_cfg.min_lr, self.warmup_steps)
        wd = cosine_schedule(step, self.total_steps, self.optim_cfg.weight_decay, self.optim_cfg.weight_decay_end)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if group["apply_wd"]:
                group["weight_decay"] = wd
        self.optimizer.zero_grad(set_to_none=True)
        chunks = raw.chunk(self.accumulate)
        losses = []
        for i, chunk in enumerate(chunks):
            # DDP would all-reduce gradients after every backward; only the last one needs it
            sync = i == len(chunks) - 1 or not hasattr(self.model, "no_sync")
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with self._autocast(chunk.device):
                    out = self.model(self.prepare(chunk), step)
                if not torch.isfinite(out.loss):
                    raise FloatingPointError(f"loss is {out.loss.item()} at step {step}; lower optim.lr or check the data")
                (out.loss.float() / len(chunks)).backward()
            losses.append(float(out.loss.detach()))
        if self.optim_cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.clip_grad)
        self.method.before_optimizer_step(step)
        self.optimizer.step()
        self.method.after_optimizer_step(step)
        if out.features is not None and step % self.monitor_every == 0:
            self.collapse = collapse_metrics(out.features.float())
        return StepResult(sum(losses) / len(losses), lr, wd, {**out.metrics, **self.collapse})

    def _autocast(self, device: torch.device):
        bf16 = self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def state_dict(self) -> dict:
        return {"method": self.method.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
