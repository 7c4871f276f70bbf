"""iBOT: masked image modelling with an online tokenizer.

Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022
(arXiv:2111.07832). DINO on the class token (teacher global views vs. every other student
view) plus masked image modelling by self-distillation: the student sees the global crops
with a random subset of patches replaced by a learned mask token, and for every masked
patch it predicts the teacher's sharpened, centred distribution over ``patch_out_dim``
prototypes computed from the *unmasked* crop. The EMA teacher is the "online tokenizer".

iBOT ViT-B/16 is the recipe behind Phikon (the HistoSSLscaling seed; the teacher's class
token is the exported feature). Defaults follow the reference implementation
(github.com/bytedance/ibot, ``main_ibot.py``): 8192 prototypes for both heads, teacher
temperature 0.04 (patch: 0.04 -> 0.07 over 30 epochs), teacher momentum 0.996, and half
of the global crops masked block-wise at a ratio drawn from U(0.1, 0.5), i.e. its
``--pred_ratio 0 0.3 --pred_ratio_var 0 0.2``.

The DINO parts (head, CLS loss, centring, EMA, schedules, multi-crop) are
:mod:`sslray.methods.dino`'s; this module adds the masked forward, the masks and the patch loss.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from timm.models import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sslray.data.transforms import AugmentConfig
from sslray.methods.base import Schedule, SSLMethod, StepOutput
from sslray.methods.dino import (
    DINOConfig,
    DINOHead,
    MultiCropConfig,
    cosine_momentum,
    dino_loss,
    ema_update,
    multi_crop,
    teacher_temperature,
    update_center,
)
from sslray.methods.registry import register_method


def _ibot_views() -> MultiCropConfig:
    # The multi-crop of iBOT's published pre-training command (README): 10 local crops.
    return MultiCropConfig(n_local=10, global_scale=(0.25, 1.0), local_scale=(0.05, 0.25))


@dataclass
class IBOTConfig:
    out_dim: int = 8192  # class-token prototypes
    patch_out_dim: int = 8192  # patch-token prototypes; must equal out_dim with shared_head
    shared_head: bool = True  # one prototype layer for class and patch tokens (iBOT's published runs)
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True  # iBOT: true for ViT-B, false for ViT-S
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    warmup_teacher_patch_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 30  # both teacher temperatures warm up over this
    center_momentum: float = 0.9
    patch_center_momentum: float = 0.9
    teacher_momentum: float = 0.996  # start of the cosine schedule to 1.0
    freeze_last_layer_epochs: float = 1
    lambda1: float = 1.0  # weight of the class-token (DINO) loss
    lambda2: float = 1.0  # weight of the masked-patch loss
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # fraction of patches masked, drawn per crop
    mask_prob: float = 0.5  # probability that a global crop is masked at all
    mask_shape: Literal["block", "random"] = "block"
    views: MultiCropConfig = field(default_factory=_ibot_views)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if min(self.out_dim, self.patch_out_dim) < 2 or self.hidden_dim < 1 or self.bottleneck_dim < 1:
            raise ValueError("method.out_dim and method.patch_out_dim must be >= 2, hidden/bottleneck dims >= 1")
        if self.shared_head and self.patch_out_dim != self.out_dim:
            raise ValueError(
                f"method.patch_out_dim ({self.patch_out_dim}) must equal method.out_dim ({self.out_dim}) "
                "when method.shared_head is true (one prototype layer serves both)"
            )
        if not (0 <= self.center_momentum < 1 and 0 <= self.patch_center_momentum < 1):
            raise ValueError("method.center_momentum and method.patch_center_momentum must be in [0, 1)")
        if not 0 <= self.teacher_momentum <= 1:
            raise ValueError(f"method.teacher_momentum must be in [0, 1], got {self.teacher_momentum}")
        temps = (self.student_temp, self.teacher_temp, self.warmup_teacher_temp, self.teacher_patch_temp,
                 self.warmup_teacher_patch_temp)
        if min(temps) <= 0:
            raise ValueError("method temperatures must be > 0")
        if min(self.lambda1, self.lambda2) < 0 or self.lambda1 + self.lambda2 == 0:
            raise ValueError("method.lambda1 and method.lambda2 must be >= 0 and not both 0")
        lo, hi = self.mask_ratio
        if not 0 <= lo <= hi < 1:
            raise ValueError(f"method.mask_ratio must satisfy 0 <= lo <= hi < 1, got {self.mask_ratio}")
        if not 0 <= self.mask_prob <= 1:
            raise ValueError(f"method.mask_prob must be in [0, 1], got {self.mask_prob}")

    def head_config(self) -> DINOConfig:
        """The class-token head is DINO's, with these dimensions."""
        return DINOConfig(out_dim=self.out_dim, hidden_dim=self.hidden_dim, bottleneck_dim=self.bottleneck_dim,
                          head_layers=self.head_layers, use_bn=self.use_bn, norm_last_layer=self.norm_last_layer)


# ---------------------------------------------------------------------------------------
# the loss


def ibot_patch_loss(
    student_patch_logits: list[torch.Tensor],
    teacher_patch_logits: list[torch.Tensor],
    masks: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """Masked-patch self-distillation, averaged over global views.

    For each global view ``v`` (lists of (B, L, K) logits and (B, L) boolean masks): the
    cross-entropy between the teacher's centred, sharpened distribution and the student's,
    summed over the masked patches of each image and divided by that image's masked count
    (at least 1), then averaged over the batch. As in the reference implementation, an
    image with no masked patch contributes 0 and still counts in the batch mean, so the
    patch term scales with the fraction of masked crops. Only the student is differentiated.
    """
    total = student_patch_logits[0].new_zeros(())
    for s, t, m in zip(student_patch_logits, teacher_patch_logits, masks, strict=True):
        target = F.softmax((t - center) / teacher_temp, dim=-1).detach()
        per_patch = torch.sum(-target * F.log_softmax(s / student_temp, dim=-1), dim=-1)  # (B, L)
        m = m.to(per_patch.dtype)
        per_image = (per_patch * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        total = total + per_image.mean()
    return total / len(student_patch_logits)


# ---------------------------------------------------------------------------------------
# masks


def block_mask(grid: tuple[int, int], n_mask: int, rng: random.Random,
               aspect: tuple[float, float] = (0.3, 1 / 0.3)) -> np.ndarray:
    """BEiT/iBOT block-wise mask of at most ``n_mask`` patches on a (h, w) patch grid.

    Rectangles of random area and log-uniform aspect ratio are added until the target is
    reached or 10 tries in a row add nothing; a rectangle is kept only if it adds at least
    one and no more than the remaining number of patches. Blocks (not scattered patches)
    make the task semantic: a masked patch cannot be copied from its unmasked neighbours.
    """
    h, w = grid
    mask = np.zeros((h, w), dtype=bool)
    min_area = (min(h, w) // 3) ** 2  # iBOT's smallest block
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    count = 0
    while count < n_mask:
        remaining = n_mask - count
        added = 0
        for _ in range(10):
            area = rng.uniform(min(min_area, remaining), remaining)
            ratio = math.exp(rng.uniform(log_lo, log_hi))
            bh, bw = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if not (1 <= bh <= h and 1 <= bw <= w):
                continue
            top, left = rng.randint(0, h - bh), rng.randint(0, w - bw)
            block = mask[top:top + bh, left:left + bw]
            new = bh * bw - int(block.sum())
            if 0 < new <= remaining:
                block[...] = True
                added = new
                break
        if added == 0:
            break
        count += added
    return mask


def random_mask(grid: tuple[int, int], n_mask: int, rng: random.Random) -> np.ndarray:
    """Exactly ``n_mask`` patches chosen uniformly (iBOT's ``--pred_shape rand``)."""
    h, w = grid
    flat = np.zeros(h * w, dtype=bool)
    flat[rng.sample(range(h * w), n_mask)] = True
    return flat.reshape(h, w)


def ibot_masks(
    batch: int,
    grid: tuple[int, int],
    ratio: tuple[float, float],
    prob: float,
    shape: str = "block",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(batch, h*w) boolean masks: each crop is masked with probability ``prob``, at a
    ratio drawn from U(ratio), block-wise or at random. Seeded from torch's RNG so
    ``torch.manual_seed`` makes a run reproducible."""
    rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
    make = block_mask if shape == "block" else random_mask
    n_patches = grid[0] * grid[1]
    masks = np.zeros((batch, n_patches), dtype=bool)
    for i in range(batch):
        if rng.random() < prob:
            n_mask = int(rng.uniform(*ratio) * n_patches)
            masks[i] = make(grid, n_mask, rng).reshape(-1)
    return torch.from_numpy(masks)


# ---------------------------------------------------------------------------------------
# the masked ViT forward


class MaskToken(nn.Module):
    """The learned embedding that replaces masked patches (iBOT's ``masked_embed``, zero-initialised)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, patches: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``patches`` (B, ..., D) from ``patch_embed``; ``mask`` (B, L) with L the product of the grid."""
        masked = mask.reshape(patches.shape[:-1]).unsqueeze(-1)
        # torch.where keeps the token in the graph even when nothing is masked (DDP needs every grad)
        return torch.where(masked, self.weight.to(patches.dtype), patches)


def vit_tokens(model: VisionTransformer, x: torch.Tensor, mask: torch.Tensor | None = None,
               mask_token: MaskToken | None = None) -> torch.Tensor:
    """All output tokens (prefix then patches) of a timm ViT, optionally with masked patches.

    Follows ``VisionTransformer.forward_features`` of timm 1.0.31 step by step (patch_embed,
    _pos_embed, patch_drop, norm_pre, blocks, norm), replacing masked patch embeddings by
    the mask token after ``patch_embed`` and before position embeddings are added, as iBOT
    does, so a masked patch keeps its position but loses its content.
    """
    x = model.patch_embed(x)  # (B, H, W, D) with dynamic_img_size, else (B, L, D)
    if mask is not None:
        if mask_token is None:
            raise ValueError("vit_tokens: a mask needs a mask_token")
        x = mask_token(x, mask)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    if model.grad_checkpointing and not torch.jit.is_scripting():
        x = checkpoint_seq(model.blocks, x)
    else:
        x = model.blocks(x)
    return model.norm(x)


def patch_grid(model: VisionTransformer, size: tuple[int, int]) -> tuple[int, int]:
    """The patch grid a (H, W) input gives, as ``patch_embed`` computes it."""
    h, w = model.patch_embed.dynamic_feat_size(tuple(size))
    return int(h), int(w)


def check_vit(model: nn.Module) -> None:
    """iBOT needs a plain timm ViT whose pooled output is the class token."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture", type(model).__name__)
    if not isinstance(model, VisionTransformer):
        raise ValueError(
            f"model.name: iBOT needs a timm VisionTransformer (vit_*, deit_*), got {arch!r} ({type(model).__name__}); "
            "its patch-token loss masks ViT patch embeddings"
        )
    if model.cls_token is None or model.global_pool != "token":
        raise ValueError(
            f"model.name: iBOT distils the class token, but {arch!r} has class_token={model.cls_token is not None} "
            f"and global_pool={model.global_pool!r}; use a ViT with a class token and model.kwargs.global_pool: token"
        )
    if not isinstance(model.patch_drop, nn.Identity):
        raise ValueError("model.kwargs.patch_drop_rate must be 0 for iBOT: a dropped patch has no teacher target")


# ---------------------------------------------------------------------------------------
# heads


class PatchPrototypes(nn.Module):
    """iBOT's separate patch output layer (``last_layer2``) on the class head's shared MLP.

    Weight-normalised like :class:`~sslray.methods.dino.DINOHead`'s last layer; the
    attribute is named ``last_layer`` so the last-layer freeze covers it too.
    """

    def __init__(self, bottleneck_dim: int, out_dim: int, norm_last_layer: bool) -> None:
        super().__init__()
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        nn.init.trunc_normal_(self.last_layer.weight, std=0.02)
        self.gain = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)


def _prototype_logits(z: torch.Tensor, layer: nn.Linear, gain: torch.Tensor) -> torch.Tensor:
    return F.linear(z, gain * F.normalize(layer.weight, dim=1))


def project(
    head: DINOHead, prototypes: PatchPrototypes | None, cls_features: torch.Tensor, patch_tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class features (N, D) and patch tokens (B, L, D) -> logits (N, K) and (B, L, Kp).

    One MLP call over every token, as iBOT's head runs over the whole sequence (BatchNorm
    statistics, if any, cover them all); the patch logits use ``prototypes`` or, with a
    shared head, the class head's own prototypes.
    """
    b, n_patch, dim = patch_tokens.shape
    z = F.normalize(head.mlp(torch.cat([cls_features, patch_tokens.reshape(b * n_patch, dim)])), dim=-1)
    z_cls, z_patch = z[: cls_features.shape[0]], z[cls_features.shape[0]:]
    patch_owner = head if prototypes is None else prototypes
    cls_logits = _prototype_logits(z_cls, head.last_layer, head.gain)
    patch_logits = _prototype_logits(z_patch, patch_owner.last_layer, patch_owner.gain)
    return cls_logits, patch_logits.reshape(b, n_patch, -1)


# ---------------------------------------------------------------------------------------
# the method


@register_method("ibot")
class IBOT(SSLMethod):
    """DINO on the class token + masked-patch self-distillation, EMA teacher, multi-crop."""

    Config = IBOTConfig
    summary = "DINO on the class token + masked patch-token self-distillation (Zhou et al. 2022; Phikon)"

    def __init__(self, backbone: nn.Module, cfg: IBOTConfig, schedule: Schedule) -> None:
        check_vit(backbone)
        super().__init__(backbone, cfg, schedule)
        self.head = DINOHead(self.embed_dim, cfg.head_config())
        self.patch_prototypes = (
            None if cfg.shared_head else PatchPrototypes(cfg.bottleneck_dim, cfg.patch_out_dim, cfg.norm_last_layer)
        )
        self.mask_token = MaskToken(self.embed_dim)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = copy.deepcopy(self.head)
        self.teacher_patch_prototypes = copy.deepcopy(self.patch_prototypes)
        for module in self._teacher_modules():
            for p in module.parameters():
                p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.register_buffer("patch_center", torch.zeros(1, cfg.patch_out_dim))
        self.warmup_temp_steps = round(cfg.warmup_teacher_temp_epochs * schedule.steps_per_epoch)
        self.freeze_last_layer_steps = round(cfg.freeze_last_layer_epochs * schedule.steps_per_epoch)

    def _student_modules(self) -> list[nn.Module]:
        return [m for m in (self.backbone, self.head, self.patch_prototypes) if m is not None]

    def _teacher_modules(self) -> list[nn.Module]:
        return [m for m in (self.teacher_backbone, self.teacher_head, self.teacher_patch_prototypes) if m is not None]

    def train(self, mode: bool = True) -> IBOT:
        """The teacher backbone stays in eval mode: iBOT's teacher has no stochastic depth."""
        super().train(mode)
        self.teacher_backbone.eval()
        return self

    def make_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        return multi_crop(images, self.cfg.views, self.cfg.augment)

    def forward(self, views: list[torch.Tensor], step: int) -> StepOutput:
        cfg = self.cfg
        n_global, n_prefix = 2, self.backbone.num_prefix_tokens
        globals_ = torch.cat(views[:n_global])
        masks = ibot_masks(globals_.shape[0], patch_grid(self.backbone, globals_.shape[-2:]), cfg.mask_ratio,
                           cfg.mask_prob, cfg.mask_shape).to(globals_.device)

        with torch.no_grad():
            t_tokens = vit_tokens(self.teacher_backbone, globals_)
            t_features = self.teacher_backbone.forward_head(t_tokens, pre_logits=True)
            t_cls, t_patch = project(self.teacher_head, self.teacher_patch_prototypes, t_features,
                                     t_tokens[:, n_prefix:])

        s_tokens = vit_tokens(self.backbone, globals_, masks, self.mask_token)
        s_features = [self.backbone.forward_head(s_tokens, pre_logits=True)]
        if len(views) > n_global:  # local crops: class token only, never masked
            s_features.append(self.backbone(torch.cat(views[n_global:])))
        s_cls, s_patch = project(self.head, self.patch_prototypes, torch.cat(s_features), s_tokens[:, n_prefix:])

        temp = teacher_temperature(step, self.warmup_temp_steps, cfg.warmup_teacher_temp, cfg.teacher_temp)
        patch_temp = teacher_temperature(step, self.warmup_temp_steps, cfg.warmup_teacher_patch_temp,
                                         cfg.teacher_patch_temp)
        t_cls_views, t_patch_views = list(t_cls.chunk(n_global)), list(t_patch.chunk(n_global))
        cls_loss = dino_loss(list(s_cls.chunk(len(views))), t_cls_views, self.center, cfg.student_temp, temp)
        patch_loss = ibot_patch_loss(list(s_patch.chunk(n_global)), t_patch_views, list(masks.chunk(n_global)),
                                     self.patch_center, cfg.student_temp, patch_temp)
        loss = cfg.lambda1 * cls_loss + cfg.lambda2 * patch_loss

        self.center.copy_(update_center(self.center, t_cls_views, cfg.center_momentum))
        # the patch centre is the mean over images of each image's mean patch output
        self.patch_center.copy_(update_center(self.patch_center, [t.mean(1) for t in t_patch_views],
                                              cfg.patch_center_momentum))
        metrics = {
            "teacher_temp": temp,
            "teacher_patch_temp": patch_temp,
            "cls_loss": float(cls_loss.detach()),
            "patch_loss": float(patch_loss.detach()),
            "masked_fraction": float(masks.float().mean()),
        }
        # the teacher backbone is the exported encoder: its class token is what the monitor watches
        return StepOutput(loss, metrics, features=t_features[: views[0].shape[0]])

    def before_optimizer_step(self, step: int) -> None:
        if step < self.freeze_last_layer_steps:
            for module in (self.head, self.patch_prototypes):
                if module is not None:
                    for p in module.last_layer.parameters():
                        p.grad = None

    def after_optimizer_step(self, step: int) -> None:
        m = cosine_momentum(step, self.schedule.total_steps, self.cfg.teacher_momentum)
        for teacher, student in zip(self._teacher_modules(), self._student_modules(), strict=True):
            ema_update(teacher, student, m)

    def encoder(self) -> nn.Module:
        return self.teacher_backbone

    def trainable_modules(self) -> list[nn.Module]:
        return [*self._student_modules(), self.mask_token]
