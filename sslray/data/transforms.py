"""View generation and augmentations as batched tensor ops.

They run on whatever device the batch is on, so on a GPU worker the CPU only decodes and
ships uint8 tiles (the cheapest thing to move) and the GPU makes the views. Crops use
``torchvision.ops.roi_align``: one call crops and resizes a whole batch, each sample its own
box, with area averaging when shrinking.

Fluorescence augmentations replace colour jitter (docs/methods/augmentations.md): flips, 90° rotations,
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
    # H&E (RGB only): stain jitter in HED space (Tellez et al. 2018) and colour jitter
    hed: float = 0.0  # each stain scaled by U(1-hed, 1+hed) and shifted by U(-hed, hed)
    brightness: float = 0.0  # multiplied by U(1-b, 1+b)
    contrast: float = 0.0  # blended with the image mean by U(1-c, 1+c)
    saturation: float = 0.0  # blended with the grey image by U(1-s, 1+s)
    min_foreground: float = 0.0  # crops: at least this fraction of foreground (Otsu) pixels, when possible

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
        for name in ("hed", "brightness", "contrast", "saturation", "min_foreground"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def colour(self) -> bool:
        return max(self.hed, self.brightness, self.contrast, self.saturation) > 0


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
    min_foreground: float = 0.0,
) -> torch.Tensor:
    """Each sample gets its own random box (area fraction ``scale``, aspect ``ratio``).

    With ``min_foreground`` the box is one holding at least that fraction of foreground
    pixels (``foreground_boxes``), so sparse fluorescence fields give crops with cells.
    """
    b, _, h, w = images.shape
    if min_foreground > 0:
        boxes = foreground_boxes(images, scale, ratio, min_foreground, generator=generator)
    else:
        boxes = random_boxes(b, h, w, scale, ratio, generator)
    return crop_boxes(images, boxes, size)


def foreground_boxes(
    images: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float], min_foreground: float,
    candidates: int = 32, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random boxes with at least ``min_foreground`` foreground pixels (Otsu on the channel mean).

    ``candidates`` boxes are drawn per image; the first one that qualifies is kept, or the
    most foreground-rich one when none does (an empty field still gives a crop). Box sums
    come from an integral image, so this costs little more than plain random crops.
    """
    b, _, h, w = images.shape
    mask = otsu_foreground(images).float()
    integral = F.pad(mask.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (B, H+1, W+1)
    boxes = random_boxes(b * candidates, h, w, scale, ratio, generator).view(b, candidates, 4)
    x0, y0 = boxes[..., 0].floor().long(), boxes[..., 1].floor().long()
    x1, y1 = boxes[..., 2].ceil().long().clamp(max=w), boxes[..., 3].ceil().long().clamp(max=h)
    rows = torch.arange(b).view(b, 1).expand(b, candidates)
    integral = integral.cpu()
    inside = integral[rows, y1, x1] - integral[rows, y0, x1] - integral[rows, y1, x0] + integral[rows, y0, x0]
    fraction = inside / ((x1 - x0) * (y1 - y0)).clamp_min(1)
    ok = fraction >= min_foreground
    choice = torch.where(ok.any(1), ok.int().argmax(1), fraction.argmax(1))
    return boxes[torch.arange(b), choice]


def otsu_foreground(images: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """(B, H, W) boolean foreground per image: Otsu on the channel mean, the smaller class.

    The larger class is the background: dark in fluorescence, bright glass in brightfield.
    """
    grey = images.mean(dim=1)
    flat = grey.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    index = ((flat - lo) / (hi - lo).clamp_min(1e-8) * (bins - 1)).round().long()
    hist = torch.zeros(flat.shape[0], bins, device=flat.device).scatter_add_(1, index, torch.ones_like(flat))
    centers = torch.arange(bins, dtype=hist.dtype, device=hist.device)
    w0 = hist.cumsum(1)
    w1 = w0[:, -1:] - w0
    m0 = (hist * centers).cumsum(1) / w0.clamp_min(1)
    m1 = ((hist * centers).sum(1, keepdim=True) - (hist * centers).cumsum(1)) / w1.clamp_min(1)
    level = (w0 * w1 * (m0 - m1) ** 2).argmax(1, keepdim=True).to(flat.dtype)
    threshold = (lo + (level + 0.5) / (bins - 1) * (hi - lo)).view(-1, 1, 1)
    above = grey > threshold
    bright_background = above.flatten(1).float().mean(1).view(-1, 1, 1) > 0.5
    return torch.where(bright_background, ~above, above)


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
    if cfg.colour:
        if c != 3:
            raise ValueError(f"augment.hed/brightness/contrast/saturation are H&E (RGB) augmentations; "
                             f"these images have {c} channels")
        x = colour_jitter(hed_jitter(x, cfg.hed, generator), cfg, generator)
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


# Ruifrok & Johnston's stain vectors (haematoxylin, eosin, DAB) as rows, as scikit-image uses them.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)


def rgb_to_hed(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> stain concentrations by colour deconvolution (optical density)."""
    od = -torch.log(rgb.clamp(1e-6, 1.0))
    return torch.einsum("bchw,cd->bdhw", od, HED_FROM_RGB.to(rgb))


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    od = torch.einsum("bdhw,dc->bchw", hed, RGB_FROM_HED.to(hed))
    return torch.exp(-od).clamp(0.0, 1.0)


def hed_jitter(rgb: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image stain jitter (Tellez et al. 2018, arXiv:1902.06543): each of H, E, D is scaled by
    U(1-sigma, 1+sigma) and shifted by U(-sigma, sigma) times its image's mean optical density,
    which mimics staining and scanner variation between labs."""
    if sigma <= 0:
        return rgb
    b = rgb.shape[0]
    hed = rgb_to_hed(rgb)
    scale = _uniform((b, 3, 1, 1), (1 - sigma, 1 + sigma), hed, generator)
    shift = _uniform((b, 3, 1, 1), (-sigma, sigma), hed, generator) * hed.mean(dim=(2, 3), keepdim=True).abs()
    return hed_to_rgb(hed * scale + shift)


def colour_jitter(rgb: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image brightness, contrast and saturation, as torchvision's ColorJitter defines them."""
    b = rgb.shape[0]
    x = rgb
    if cfg.brightness > 0:
        x = x * _uniform((b, 1, 1, 1), (1 - cfg.brightness, 1 + cfg.brightness), x, generator)
    if cfg.contrast > 0:
        mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * _uniform((b, 1, 1, 1), (1 - cfg.contrast, 1 + cfg.contrast), x, generator)
    if cfg.saturation > 0:
        grey = _grey(x)
        x = grey + (x - grey) * _uniform((b, 1, 1, 1), (1 - cfg.saturation, 1 + cfg.saturation), x, generator)
    return x.clamp(0.0, 1.0)


def _grey(rgb: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


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
