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
:mod:`sslray.methods.dino`'s; this module adds the masked forward and the patch head; the patch loss is
:mod:`sslray.methods.ibot_loss`, the masks :mod:`sslray.methods.patch_masks`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
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
from sslray.methods.ibot_loss import ibot_patch_loss
from sslray.methods.patch_masks import block_mask, ibot_masks, random_mask
from sslray.methods.registry import register_method
from sslray.models.vit_adapter import ViTAdapter, patch_grid

# the loss and the masks live in their own modules; re-exported where they were first defined
__all__ = ["IBOT", "IBOTConfig", "MaskToken", "PatchPrototypes", "block_mask", "check_vit", "ibot_masks",
           "ibot_patch_loss", "patch_grid", "project", "random_mask", "vit_tokens"]


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
# the masked ViT forward


class MaskToken(nn.Module):
    """The learned embedding that replaces masked patches (iBOT's ``masked_embed``, zero-initialised)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))


def vit_tokens(model: VisionTransformer, x: torch.Tensor, mask: torch.Tensor | None = None,
               mask_token: MaskToken | None = None) -> torch.Tensor:
    """All output tokens (prefix then patches) of a timm ViT, optionally with masked patches.

    Masked patch embeddings are replaced by the mask token before position embeddings are
    added, as iBOT does, so a masked patch keeps its position but loses its content (the
    steps are :class:`~sslray.models.vit_adapter.ViTAdapter`'s).
    """
    if mask is not None and mask_token is None:
        raise ValueError("vit_tokens: a mask needs a mask_token")
    vit = ViTAdapter(model)
    return vit.forward_tokens(vit.tokens(x, mask, None if mask_token is None else mask_token.weight))


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

    def _teacher_outputs(self, globals_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The unmasked global crops through the teacher: pooled features, class and patch logits."""
        vit = ViTAdapter(self.teacher_backbone)
        tokens = vit.forward_tokens(vit.tokens(globals_))
        features = vit.forward_head(tokens)
        cls_logits, patch_logits = project(self.teacher_head, self.teacher_patch_prototypes, features,
                                           tokens[:, vit.num_prefix_tokens:])
        return features, cls_logits, patch_logits

    def _student_outputs(self, globals_: torch.Tensor, locals_: list[torch.Tensor], masks: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked global crops and (class token only, never masked) local crops through the student."""
        vit = ViTAdapter(self.backbone)
        tokens = vit.forward_tokens(vit.tokens(globals_, masks, self.mask_token.weight))
        features = [vit.forward_head(tokens)]
        if locals_:
            features.append(self.backbone(torch.cat(locals_)))
        return project(self.head, self.patch_prototypes, torch.cat(features), tokens[:, vit.num_prefix_tokens:])

    def forward(self, views: list[torch.Tensor], step: int) -> StepOutput:
        cfg = self.cfg
        n_global = 2
        globals_ = torch.cat(views[:n_global])
        grid = patch_grid(self.backbone, globals_.shape[-2:])
        masks = ibot_masks(globals_.shape[0], grid, cfg.mask_ratio, cfg.mask_prob, cfg.mask_shape).to(globals_.device)
        with torch.no_grad():
            t_features, t_cls, t_patch = self._teacher_outputs(globals_)
        s_cls, s_patch = self._student_outputs(globals_, views[n_global:], masks)

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
