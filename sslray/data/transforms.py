"""View generation and augmentations as batched tensor ops.

They run on whatever device the batch is on, so on a GPU worker the CPU only decodes and
ships uint8 tiles (the cheapest thing to move) and the GPU makes the views. Crops use
``torchvision.ops.roi_align``: one call crops and resizes a whole batch, each sample its own
box, with area averaging when shrinking.

Fluorescence augmentations replace colour jitter (design.md §4): flips, 90° rotations,
per-channel gain, gamma U(0.5, 1.5) and additive shift U(-0.3, 0.3), blur, noise and
channel dropout. They act on intensities scaled to [0, 1], before normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    gain: tuple[float, float] = (1.0, 1.0)  # per-channel multiplicative (exposure)
    gamma: tuple[float, float] = (0.5, 1.5)  # per-channel
    shift: float = 0.3  # per-channel additive U(-shift, shift)
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    noise_std: float = 0.0
    channel_dropout: float = 0.0  # probability of zeroing each channel (never all)

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "blur_prob", "channel_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{name} must be a probability in [0, 1], got {value}")
        for name in ("gain", "gamma", "blur_sigma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"augment.{name} must be a range 0 < lo <= hi, got {(lo, hi)}")
        if self.shift < 0 or self.noise_std < 0:
            raise ValueError("augment.shift and augment.noise_std must be >= 0")


def to_unit(images: torch.Tensor, max_value: float) -> torch.Tensor:
    """uint8/uint16 tiles -> float32 in [0, 1] (``max_value`` is the dtype's scale)."""
    return images.float().div_(max_value)


def normalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Each sample gets its own random box (area fraction ``scale``, aspect ``ratio``)."""
    b, _, h, w = images.shape
    return crop_boxes(images, random_boxes(b, h, w, scale, ratio, generator), size)


def random_boxes(
    b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, 4) boxes ``x0, y0, x1, y1`` in pixels of an (H, W) image, one per sample.

    Methods that match locations across views (VICRegL) keep the boxes to map view pixels
    back to image coordinates.
    """
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=generator) * h * w
    log_r = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    cw = torch.sqrt(area * aspect).clamp(1, w)
    ch = torch.sqrt(area / aspect).clamp(1, h)
    x0 = torch.rand(b, generator=generator) * (w - cw)
    y0 = torch.rand(b, generator=generator) * (h - ch)
    return torch.stack([x0, y0, x0 + cw, y0 + ch], 1)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop box i of image i and resize it to ``size`` x ``size`` (bilinear, one batched op)."""
    index = torch.arange(len(boxes), dtype=boxes.dtype).unsqueeze(1)
    rois = torch.cat([index, boxes], 1).to(images.device, images.dtype)
    return roi_align(images, rois, output_size=size, aligned=True)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply fluorescence augmentations to a float batch in [0, 1] (returns a new tensor)."""
    x = _flip_and_rotate(images, cfg, generator)
    b, c = x.shape[:2]
    x = x * _uniform((b, c, 1, 1), cfg.gain, x, generator)
    x = x.clamp_min(0).pow(_uniform((b, c, 1, 1), cfg.gamma, x, generator))
    if cfg.shift > 0:
        x = x + _uniform((b, c, 1, 1), (-cfg.shift, cfg.shift), x, generator)
    if cfg.blur_prob > 0:
        x = _random_blur(x, cfg, generator)
    if cfg.noise_std > 0:
        x = x + torch.randn(x.shape, generator=generator).to(x) * cfg.noise_std
    if cfg.channel_dropout > 0 and c > 1:
        x = x * _channel_keep_mask(b, c, cfg.channel_dropout, generator).to(x)
    return x


def _uniform(shape, bounds, like: torch.Tensor, generator) -> torch.Tensor:
    return torch.empty(shape).uniform_(bounds[0], bounds[1], generator=generator).to(like)


def _flip_and_rotate(x: torch.Tensor, cfg: AugmentConfig, generator) -> torch.Tensor:
    b = x.shape[0]
    if cfg.hflip > 0:
        mask = (torch.rand(b, generator=generator) < cfg.hflip).to(x.device)
        x = torch.where(mask.view(b, 1, 1, 1), x.flip(-1), x)
    if cfg.vflip > 0:
        mask = (torch.rand(b, generator=generator) < cfg.vflip).to(x.device)
        x = torch.where(mask.view(b, 1, 1, 1), x.flip(-2), x)
    if cfg.rot90 and x.shape[-1] == x.shape[-2]:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask.view(b, 1, 1, 1), x.transpose(-1, -2), x)
    return x


def _random_blur(x: torch.Tensor, cfg: AugmentConfig, generator) -> torch.Tensor:
    """Gaussian blur of a random subset; one sigma per call keeps it a single conv."""
    b, c = x.shape[:2]
    sigma = float(torch.empty(1).uniform_(*cfg.blur_sigma, generator=generator))
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    blurred = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel, groups=c)
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="reflect"), kernel.transpose(-1, -2), groups=c)
    mask = (torch.rand(b, generator=generator) < cfg.blur_prob).to(x.device).view(b, 1, 1, 1)
    return torch.where(mask, blurred, x)


def _channel_keep_mask(b: int, c: int, p: float, generator) -> torch.Tensor:
    keep = torch.rand(b, c, generator=generator) >= p
    none_kept = ~keep.any(1)
    keep[none_kept, torch.randint(0, c, (int(none_kept.sum()),), generator=generator)] = True
    return keep.view(b, c, 1, 1).float()
