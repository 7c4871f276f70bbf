"""MAE: masked autoencoders.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (arXiv:2111.06377).
A random subset of patches (``mask_ratio``, 75% in the paper) is removed; the ViT encoder
sees only the visible patches (which is what makes MAE cheap), and a light transformer
decoder, given the encoded visible tokens plus a shared mask token at every removed
position, predicts the pixels of the removed patches. The loss is the mean squared error
on removed patches only, optionally against per-patch normalised pixels
(``norm_pix_loss``), which the paper found gives better representations.

No intensity augmentation by default: MAE reconstructs pixels, so a gamma or shift would
only change the target; flips and 90° turns (true symmetries of microscopy) are kept.

Defaults follow the paper's reference implementation (decoder 512-d, 8 blocks, 16 heads,
per-patch normalised targets, one random-resized crop at scale (0.2, 1)); the
CellPaintSSL seed's ViT-S recipe (mask ratio 0.5, decoder 256-d, 8 blocks, 8 heads) is in
``configs/methods/mae.yaml``. The encoder is the timm ViT itself (its patch embedding,
position embeddings, prefix tokens and blocks), so the exported embedding is simply the
backbone's pooled output on the full image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from sslray.data.transforms import AugmentConfig, augment, random_resized_crop
from sslray.methods.base import Schedule, SSLMethod, StepOutput
from sslray.methods.mae_loss import mae_loss, normalize_patches, patchify, unpatchify
from sslray.methods.registry import register_method
from sslray.models.vit_adapter import ViTAdapter, select_tokens

# the pixel target and the loss live in sslray.methods.mae_loss; re-exported where they were first defined
__all__ = ["MAE", "MAEConfig", "MAEDecoder", "check_vit", "mae_loss", "normalize_patches", "num_masked", "patchify",
           "random_keep", "random_masking", "sincos_pos_embed_2d", "unpatchify", "unshuffle"]


def _pixel_safe_augment() -> AugmentConfig:
    """Flips and 90° turns only: intensity changes would alter the reconstruction target."""
    return AugmentConfig(gamma=(1.0, 1.0), shift=0.0)


@dataclass
class MAEConfig:
    mask_ratio: float = 0.75  # fraction of patches removed (paper: 0.75; the seeds: 0.5-0.75, docs/methods/mae.md)
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    norm_pix_loss: bool = True  # per-patch normalised pixel targets
    view_size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)  # random-resized-crop area fraction
    augment: AugmentConfig = field(default_factory=_pixel_safe_augment)

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"method.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.decoder_dim < 4 or self.decoder_dim % 4:
            raise ValueError(
                f"method.decoder_dim must be a positive multiple of 4 (2-D sin-cos position embedding), "
                f"got {self.decoder_dim}"
            )
        if self.decoder_heads < 1 or self.decoder_dim % self.decoder_heads:
            raise ValueError(
                f"method.decoder_heads must divide method.decoder_dim ({self.decoder_dim}), got {self.decoder_heads}"
            )
        if self.decoder_depth < 1:
            raise ValueError(f"method.decoder_depth must be >= 1, got {self.decoder_depth}")
        if self.decoder_mlp_ratio <= 0:
            raise ValueError(f"method.decoder_mlp_ratio must be > 0, got {self.decoder_mlp_ratio}")
        if self.view_size < 1:
            raise ValueError(f"method.view_size must be >= 1, got {self.view_size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"method.scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")


# ---------------------------------------------------------------------------------------
# masking and decoder positions (the pixel target and the loss are sslray.methods.mae_loss)


def num_masked(length: int, ratio: float) -> int:
    """``round(length * ratio)``, kept within [1, length - 1] so both sides are non-empty."""
    if length < 2:
        raise ValueError(f"MAE needs at least 2 patches per image, got {length}")
    return min(max(round(length * ratio), 1), length - 1)


def random_masking(
    x: torch.Tensor, ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by sorting uniform noise, as in the MAE reference.

    ``x`` is (B, L, D). Returns the visible tokens (B, L - n_mask, D) in shuffled order,
    the boolean mask (B, L) in the original order (True = removed, the patches the loss
    is on) and ``ids_restore`` (B, L), the permutation that puts the shuffled sequence
    [visible, removed] back in the original order. Masking whole tokens (rather than
    replacing them) is what lets the encoder skip removed patches entirely.
    """
    ids_keep, mask, ids_restore = random_keep(x.shape[0], x.shape[1], ratio, x.device, generator)
    return select_tokens(x, ids_keep), mask, ids_restore


def random_keep(
    batch: int, length: int, ratio: float, device: torch.device, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The choice behind :func:`random_masking`: ``ids_keep`` (B, L - n_mask), the mask and ``ids_restore``."""
    n_keep = length - num_masked(length, ratio)
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch, length, generator=generator, device=noise_device).to(device)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the first n_keep are kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, length, dtype=torch.bool, device=device)
    mask[:, :n_keep] = False
    return ids_shuffle[:, :n_keep], torch.gather(mask, 1, ids_restore), ids_restore


def unshuffle(kept: torch.Tensor, fill: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Put visible tokens (B, K, D) back at their positions, ``fill`` (D,) everywhere else."""
    b, length = ids_restore.shape
    dim = kept.shape[-1]
    filler = fill.to(kept.dtype).expand(b, length - kept.shape[1], dim)
    shuffled = torch.cat([kept, filler], dim=1)
    return torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings (h*w, dim), as MAE's decoder uses.

    Half the dimensions encode the row, half the column, each as sines and cosines of
    geometrically spaced frequencies. Being a function of the grid, it serves any view size.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a dimension divisible by 4, got {dim}")
    gh, gw = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))

    def one_axis(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1).double() * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    return torch.cat([one_axis(rows), one_axis(cols)], dim=1).float()


# ---------------------------------------------------------------------------------------
# the decoder


class MAEDecoder(nn.Module):
    """Linear embedding, mask tokens, sin-cos positions, ``depth`` transformer blocks, pixel head.

    Prefix tokens (class/register) pass through the decoder without a position embedding,
    as the class token does in the reference; only patch predictions are returned.
    """

    def __init__(self, encoder_dim: int, out_dim: int, cfg: MAEConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_dim, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[
            Block(cfg.decoder_dim, cfg.decoder_heads, cfg.decoder_mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(cfg.decoder_depth)
        ])
        self.norm = norm(cfg.decoder_dim)
        self.pred = nn.Linear(cfg.decoder_dim, out_dim)
        self.apply(_init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, n_prefix: int,
                grid: tuple[int, int]) -> torch.Tensor:
        """Encoded (B, n_prefix + K, D_enc) -> pixel predictions (B, L, out_dim) for every patch."""
        x = self.embed(latent)
        prefix, kept = x[:, :n_prefix], x[:, n_prefix:]
        patches = unshuffle(kept, self.mask_token.reshape(-1), ids_restore)
        patches = patches + sincos_pos_embed_2d(x.shape[-1], grid).to(patches)
        x = self.norm(self.blocks(torch.cat([prefix, patches], dim=1)))
        return self.pred(x[:, n_prefix:])


def _init_weights(module: nn.Module) -> None:
    """Xavier-uniform linears and unit LayerNorms, as the MAE reference initialises its decoder."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------
# the method


def check_vit(model: nn.Module) -> int:
    """MAE drops patch tokens, so it needs a timm ViT; returns its (square) patch size."""
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
    if not isinstance(model, VisionTransformer):
        raise ValueError(
            f"model.name: MAE needs a ViT backbone (a timm VisionTransformer such as vit_small_patch16_224): "
            f"it encodes only the visible patch tokens, got {arch!r} ({type(model).__name__})"
        )
    ph, pw = ViTAdapter(model).patch_size
    if ph != pw:
        raise ValueError(f"model.name: MAE needs square patches, {arch!r} has {(ph, pw)}")
    if model.global_pool == "map":
        raise ValueError(
            f"model.kwargs.global_pool: MAE does not train an attention-pool head ({arch!r} has global_pool='map'); "
            "use 'token' or 'avg'"
        )
    return ph


@register_method("mae")
class MAE(SSLMethod):
    """Masked autoencoder: encode visible patches, decode pixels of the removed ones."""

    Config = MAEConfig
    summary = "masked autoencoder, pixel reconstruction of removed patches (He et al. 2022)"

    def __init__(self, backbone: nn.Module, cfg: MAEConfig, schedule: Schedule) -> None:
        self.patch = check_vit(backbone)
        super().__init__(backbone, cfg, schedule)
        if cfg.view_size % self.patch:
            raise ValueError(f"method.view_size ({cfg.view_size}) must be a multiple of the patch size {self.patch}")
        img_size = ViTAdapter(backbone).img_size
        if not backbone.dynamic_img_size and img_size and img_size != (cfg.view_size, cfg.view_size):
            raise ValueError(
                f"method.view_size ({cfg.view_size}) differs from the backbone's img_size {img_size} and the backbone "
                "was built without dynamic_img_size"
            )
        in_chans = ViTAdapter(backbone).in_chans
        self.decoder = MAEDecoder(self.embed_dim, self.patch * self.patch * in_chans, cfg)

    def make_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        crop = random_resized_crop(images, self.cfg.view_size, self.cfg.scale,
                                   min_foreground=self.cfg.augment.min_foreground)
        return [augment(crop, self.cfg.augment)]

    def forward(self, views: list[torch.Tensor], step: int) -> StepOutput:
        images = views[0]
        grid = (images.shape[-2] // self.patch, images.shape[-1] // self.patch)
        target = patchify(images, self.patch)
        tokens, mask, ids_restore = self.encode(images)
        # fc_norm is the final norm of avg-pooled ViTs (their ``norm`` is the identity). Applied
        # token-wise it gives the decoder normalised latents, as MAE's encoder ends with a norm,
        # and every backbone parameter a gradient, as DDP needs; LayerNorm being per token, it
        # commutes with class-token pooling.
        latent = self.backbone.fc_norm(tokens)
        pred = self.decoder(latent, ids_restore, self.backbone.num_prefix_tokens, grid)
        loss = mae_loss(pred, target, mask, self.cfg.norm_pix_loss)
        with torch.no_grad():  # the exported pooling (class token or patch mean), on the visible patches
            features = self.backbone.forward_head(tokens, pre_logits=True)
        n_patches = mask.shape[1]  # the fraction is fixed by the grid: no device sync to report it
        metrics = {"masked_fraction": num_masked(n_patches, self.cfg.mask_ratio) / n_patches}
        return StepOutput(loss, metrics, features=features.detach())

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Visible tokens through the ViT: (B, prefix + K, D) latents, the mask and ``ids_restore``.

        Random masking comes after position embeddings are added, so every kept token
        carries its own position; timm's ``patch_drop`` does not run, the MAE mask replaces
        it. The latents are what ``forward_head`` pools.
        """
        vit = ViTAdapter(self.backbone)
        tokens = vit.tokens(images)  # (B, prefix + L, D), positions added
        n_patches = tokens.shape[1] - vit.num_prefix_tokens
        ids_keep, mask, ids_restore = random_keep(tokens.shape[0], n_patches, self.cfg.mask_ratio,
                                                  tokens.device, generator)
        return vit.forward_tokens(tokens, keep_indices=ids_keep), mask, ids_restore

    def encoder(self) -> nn.Module:
        return self.backbone

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.decoder]
