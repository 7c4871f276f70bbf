"""DINO: self-distillation with no labels.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021
(arXiv:2104.14294). A student sees all crops, an EMA teacher sees the global crops; the
student matches the teacher's sharpened, centred distribution over ``out_dim`` prototypes.

Defaults follow the Cell Painting DINO recipe of the CellPaintSSL seed (teacher temperature
0.01 -> 0.04 over 20 epochs, teacher momentum 0.9995 on a cosine schedule, last layer frozen
for 3 epochs), with the original head (hidden 2048, bottleneck 256).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sslray.data.transforms import AugmentConfig, augment, random_resized_crop
from sslray.methods.base import Schedule, SSLMethod, StepOutput
from sslray.methods.registry import register_method


@dataclass
class MultiCropConfig:
    global_size: int = 224
    local_size: int = 96
    n_local: int = 8
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)

    def __post_init__(self) -> None:
        if self.n_local < 0:
            raise ValueError(f"views.n_local must be >= 0, got {self.n_local}")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"views.{name} must satisfy 0 < lo <= hi <= 1, got {(lo, hi)}")


@dataclass
class DINOConfig:
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    use_bn: bool = False  # BatchNorm in the head MLP (DINO's use_bn_in_head); helps small models start
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.01
    warmup_teacher_temp_epochs: float = 20
    center_momentum: float = 0.9
    teacher_momentum: float = 0.9995  # start of the cosine schedule to 1.0
    freeze_last_layer_epochs: float = 3
    views: MultiCropConfig = field(default_factory=MultiCropConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.out_dim < 2 or self.hidden_dim < 1 or self.bottleneck_dim < 1:
            raise ValueError("method.out_dim must be >= 2 and hidden/bottleneck dims >= 1")
        if not 0 <= self.center_momentum < 1 or not 0 <= self.teacher_momentum <= 1:
            raise ValueError("method.center_momentum must be in [0, 1) and teacher_momentum in [0, 1]")
        if min(self.student_temp, self.teacher_temp, self.warmup_teacher_temp) <= 0:
            raise ValueError("method temperatures must be > 0")


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised prototypes (no bias).

    The weight normalisation is written out (``g * v / |v|``) instead of using
    ``nn.utils.weight_norm`` so the head deep-copies and DDP-wraps without hooks; with
    ``norm_last_layer`` the gain is fixed at 1, which the DINO paper found stabilises ViTs.
    """

    def __init__(self, in_dim: int, cfg: DINOConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(max(cfg.head_layers - 1, 0)):
            layers.append(nn.Linear(dim, cfg.hidden_dim))
            if cfg.use_bn:
                layers.append(nn.BatchNorm1d(cfg.hidden_dim))
            layers.append(nn.GELU())
            dim = cfg.hidden_dim
        layers.append(nn.Linear(dim, cfg.bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_trunc_normal_init)
        self.last_layer = nn.Linear(cfg.bottleneck_dim, cfg.out_dim, bias=False)
        _trunc_normal_init(self.last_layer)
        self.gain = nn.Parameter(torch.ones(cfg.out_dim, 1), requires_grad=not cfg.norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        weight = self.gain * F.normalize(self.last_layer.weight, dim=1)
        return F.linear(x, weight)


def _trunc_normal_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def dino_loss(
    student_logits: list[torch.Tensor],
    teacher_logits: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """Cross-entropy between every teacher view and every *other* student view, averaged.

    Teacher views are assumed to be the first ``len(teacher_logits)`` student views.
    """
    targets = [F.softmax((t - center) / teacher_temp, dim=-1).detach() for t in teacher_logits]
    log_probs = [F.log_softmax(s / student_temp, dim=-1) for s in student_logits]
    total, pairs = student_logits[0].new_zeros(()), 0
    for i, target in enumerate(targets):
        for j, log_p in enumerate(log_probs):
            if i == j:
                continue
            total = total + torch.sum(-target * log_p, dim=-1).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: list[torch.Tensor], momentum: float) -> torch.Tensor:
    """EMA of the teacher's mean output, averaged over all data-parallel ranks."""
    batch = torch.cat(teacher_logits)
    batch_sum = batch.sum(0, keepdim=True)
    count = torch.tensor(float(batch.shape[0]), device=batch.device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(batch_sum)
        dist.all_reduce(count)
    return center * momentum + (batch_sum / count) * (1 - momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """Teacher momentum rises from ``base`` to 1 along a half cosine."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


def teacher_temperature(step: int, warmup_steps: int, start: float, end: float) -> float:
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


def multi_crop(images: torch.Tensor, views: MultiCropConfig, aug: AugmentConfig) -> list[torch.Tensor]:
    """2 global + ``n_local`` local augmented crops of a float batch in [0, 1]."""
    fg = aug.min_foreground
    crops = [random_resized_crop(images, views.global_size, views.global_scale, min_foreground=fg) for _ in range(2)]
    crops += [random_resized_crop(images, views.local_size, views.local_scale, min_foreground=fg)
              for _ in range(views.n_local)]
    return [augment(c, aug) for c in crops]


@register_method("dino")
class DINO(SSLMethod):
    """Student/teacher self-distillation over multi-crop views."""

    Config = DINOConfig
    summary = "self-distillation, EMA teacher, multi-crop (Caron et al. 2021)"

    def __init__(self, backbone: nn.Module, cfg: DINOConfig, schedule: Schedule) -> None:
        super().__init__(backbone, cfg, schedule)
        self.head = DINOHead(self.embed_dim, cfg)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = copy.deepcopy(self.head)
        for p in [*self.teacher_backbone.parameters(), *self.teacher_head.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.warmup_temp_steps = round(cfg.warmup_teacher_temp_epochs * schedule.steps_per_epoch)
        self.freeze_last_layer_steps = round(cfg.freeze_last_layer_epochs * schedule.steps_per_epoch)

    def make_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        return multi_crop(images, self.cfg.views, self.cfg.augment)

    def forward(self, views: list[torch.Tensor], step: int) -> StepOutput:
        with torch.no_grad():
            teacher_features = [self.teacher_backbone(v) for v in views[:2]]
            teacher_out = [self.teacher_head(f) for f in teacher_features]
        student_out = self._student(views)
        temp = teacher_temperature(step, self.warmup_temp_steps, self.cfg.warmup_teacher_temp, self.cfg.teacher_temp)
        loss = dino_loss(student_out, teacher_out, self.center, self.cfg.student_temp, temp)
        self.center.copy_(update_center(self.center, teacher_out, self.cfg.center_momentum))
        # the teacher backbone is the exported encoder: its features are what the monitor must watch
        return StepOutput(loss, {"teacher_temp": temp}, features=teacher_features[0])

    def _student(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone on same-shape crops as one batch each; the head once on all features.

        One head call (as in the reference implementation) keeps BatchNorm statistics, when
        the head has them, over every crop of the step.
        """
        features: list[torch.Tensor] = []
        start = 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape[1:] == views[start].shape[1:]:
                end += 1
            features.append(self.backbone(torch.cat(views[start:end])))
            start = end
        return list(self.head(torch.cat(features)).chunk(len(views)))

    def before_optimizer_step(self, step: int) -> None:
        if step < self.freeze_last_layer_steps:
            for p in self.head.last_layer.parameters():
                p.grad = None

    def after_optimizer_step(self, step: int) -> None:
        m = cosine_momentum(step, self.schedule.total_steps, self.cfg.teacher_momentum)
        ema_update(self.teacher_backbone, self.backbone, m)
        ema_update(self.teacher_head, self.head, m)

    def encoder(self) -> nn.Module:
        return self.teacher_backbone

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.head]


@register_method("channel_agnostic_dino")
class ChannelAgnosticDINO(DINO):
    """DINO on single channels: one encoder for any marker panel (uniDINO).

    Each training image contributes one randomly chosen channel, so the encoder (in_chans=1)
    learns features that do not depend on which marker a channel shows or how many there
    are. An image with C channels is embedded channel by channel and the C vectors are
    concatenated in channel order (``sslray embed`` does this from the checkpoint).
    """

    summary = "DINO on random single channels; C-channel images embed as C concatenated vectors (uniDINO)"
    channel_agnostic = True

    def make_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        return multi_crop(random_channel(images), self.cfg.views, self.cfg.augment)


def random_channel(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): one channel per image, drawn uniformly."""
    picks = torch.randint(images.shape[1], (images.shape[0],), generator=generator).to(images.device)
    return images[torch.arange(images.shape[0], device=images.device), picks].unsqueeze(1)
