"""Intensity scaling at ingest: what raw pixel values become in the store.

Integer images are stored as they are unless percentile clipping is asked for. Floats (ion
counts, deconvolved intensities) need a scale: values in [0, 1] map to the full uint16
range, anything else needs ``float_max`` or percentile clipping. Scaling is never decided
per image, which would make intensities incomparable across images: ``float_max`` is the
user's, and clipping percentiles are computed once for the whole dataset from a sample of
its images (``calibrate``) and recorded in the store's attributes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CALIBRATION_IMAGES = 32  # images sampled to estimate the dataset's percentiles
PIXELS_PER_IMAGE = 20_000


class IntensityError(ValueError):
    """An image cannot be scaled as configured; the message names the file."""


@dataclass(frozen=True)
class Scaling:
    float_max: tuple[float, ...] | None = None  # value mapped to full scale, one or per channel
    log1p: bool = False  # before scaling
    low: tuple[float, ...] | None = None  # per-channel values mapped to 0 (dataset percentiles)
    high: tuple[float, ...] | None = None  # ... and to full scale

    def as_attrs(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def calibrate(images: Iterable[np.ndarray], percentiles: tuple[float, float], log1p: bool, seed: int = 0
              ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (low, high) percentiles of a pixel sample drawn from ``images``."""
    rng = np.random.default_rng(seed)
    samples = []
    for image in images:
        flat = image.reshape(image.shape[0], -1)
        pick = rng.integers(0, flat.shape[1], size=min(PIXELS_PER_IMAGE, flat.shape[1]))
        values = flat[:, pick].astype(np.float64)
        samples.append(np.log1p(np.clip(values, 0, None)) if log1p else values)
    if not samples:
        raise IntensityError("no readable image to calibrate the percentile clipping on")
    pixels = np.concatenate(samples, axis=1)
    if not np.isfinite(pixels).all():
        raise IntensityError("images contain NaN or infinite values; cannot calibrate percentiles")
    low, high = np.percentile(pixels, list(percentiles), axis=1)
    high = np.maximum(high, low + 1e-6)  # an empty channel must not divide by zero
    return tuple(float(v) for v in low), tuple(float(v) for v in high)


def sample_for_calibration(n_sources: int, seed: int = 0) -> list[int]:
    """Which sources to calibrate on: all of a small set, an even random sample of a large one."""
    if n_sources <= CALIBRATION_IMAGES:
        return list(range(n_sources))
    return sorted(np.random.default_rng(seed).choice(n_sources, CALIBRATION_IMAGES, replace=False).tolist())


def to_storable(image: np.ndarray, path: Path | str, scaling: Scaling) -> np.ndarray:
    """Pixels as stored: uint8/uint16 pass through unless clipped; floats become uint16."""
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise IntensityError(f"{path}: image contains NaN or infinite values")
    if scaling.low is not None:
        return _clip_to_percentiles(image, path, scaling)
    if image.dtype.kind != "f":
        return image
    if scaling.log1p:
        image = np.log1p(np.clip(image, 0, None))
    if scaling.float_max is not None:
        image = np.clip(image / _per_channel(scaling.float_max, image, path, "float_max"), 0, 1)
    elif image.min() < 0 or image.max() > 1:
        raise IntensityError(
            f"{path}: float image with values in [{image.min():.3g}, {image.max():.3g}]; pass --float-max "
            "(the value to map to full scale: one, or one per channel) and optionally --log1p, "
            "or --clip-percentiles"
        )
    return np.round(image * 65535).astype(np.uint16)


def _clip_to_percentiles(image: np.ndarray, path: Path | str, scaling: Scaling) -> np.ndarray:
    values = image.astype(np.float32)
    if scaling.log1p:
        values = np.log1p(np.clip(values, 0, None))
    low = _per_channel(scaling.low, values, path, "calibrated channel")
    high = _per_channel(scaling.high, values, path, "calibrated channel")
    unit = np.clip((values - low) / (high - low), 0, 1)
    if image.dtype == np.uint8:
        return np.round(unit * 255).astype(np.uint8)
    return np.round(unit * 65535).astype(np.uint16)


def _per_channel(values: tuple[float, ...], image: np.ndarray, path: Path | str, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.size not in (1, image.shape[0]):
        raise IntensityError(f"{path}: {array.size} {what} values for {image.shape[0]} channels")
    return array.reshape(-1, 1, 1)

