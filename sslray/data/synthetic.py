"""A deterministic, download-free, cell-like labelled image set for the quickstart.

Two fluorescence channels (``DNA``: nuclei, ``cytoplasm``) on a dark background. The four
classes differ only in *morphology and texture*:

- ``round``: round cells, one round nucleus;
- ``spindle``: elongated cells (aspect ~3) with elongated nuclei, random orientation;
- ``punctate``: round cells whose cytoplasm is granular (bright puncta) instead of smooth;
- ``fragmented``: round cells whose nucleus is broken into small fragments (apoptosis).

Everything a random network separates as easily is randomised *within* every class with the
same distribution: cell count and size, cell area (spindles keep the area of a round cell),
per-channel gain, background level, camera noise and defocus blur. A linear probe on
features that mostly encode brightness or density therefore does poorly; features that
encode shape and texture, which SSL with intensity augmentations learns, do well.

The set is a pure function of ``seed``: the same seed writes byte-identical files.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ("round", "spindle", "punctate", "fragmented")
CHANNELS = ("DNA", "cytoplasm")


@dataclass(frozen=True)
class SyntheticSpec:
    images_per_class: int = 48
    size: int = 128
    seed: int = 0
    # Also write each field at half the magnification (2x downsampled), BreakHis-style, with
    # magnification and field_id columns in labels.csv (for MPCS): e.g. (10, 20).
    magnifications: tuple[int, int] | None = None


def render_field(label: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """One (2, size, size) uint8 field of view of class ``label``."""
    if label not in CLASSES:
        raise ValueError(f"unknown synthetic class {label!r}; choose from {CLASSES}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    nuclei = np.zeros((size, size), np.float32)
    cyto = np.zeros((size, size), np.float32)
    n_cells = int(rng.integers(22, 35)) * size * size // (128 * 128)
    for _ in range(max(n_cells, 1)):
        _draw_cell(label, rng, yy, xx, nuclei, cyto)
    image = np.stack([nuclei, np.clip(cyto, 0, None)])
    return _acquire(image, rng)


def _draw_cell(label: str, rng: np.random.Generator, yy, xx, nuclei, cyto) -> None:
    size = nuclei.shape[0]
    cy, cx = rng.uniform(0, size, 2)
    radius = rng.uniform(7.0, 10.0)
    theta = rng.uniform(0, np.pi)
    # Rotate coordinates into the cell's frame once; every class uses the same frame.
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    if label == "spindle":
        cell_a, cell_b = radius * 1.75, radius / 1.75  # same area as a round cell
        nuc = [(0.0, radius * 0.85, radius * 0.3)]
    elif label == "fragmented":
        cell_a = cell_b = radius
        nuc = []
    else:
        cell_a = cell_b = radius
        nuc = [(0.0, radius * 0.47, radius * 0.47)]
    body = _soft_ellipse(u, v, cell_a, cell_b)
    if label == "punctate":
        cyto += body * _puncta(rng, u, v, cell_a) * rng.uniform(0.8, 1.2)
    else:
        cyto += body * rng.uniform(0.45, 0.6)
    for shift, a, b in nuc:
        nuclei += _soft_ellipse(u - shift, v, a, b) * rng.uniform(0.7, 1.0)
    if label == "fragmented":
        nuclei += _fragments(rng, u, v, radius)


def _soft_ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return 1.0 / (1.0 + np.exp((r - 1.0) * 8.0))


def _puncta(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Granular texture whose mean matches the smooth cytoplasm (~0.52)."""
    spots = np.zeros_like(u)
    for _ in range(int(rng.integers(7, 11))):
        pu, pv = rng.uniform(-radius, radius, 2)
        spots += np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * 1.6**2))
    return 0.2 + 1.4 * np.clip(spots, 0, 1.0) * 0.6


def _fragments(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Nuclear fragments: 5-8 small bright blobs where one nucleus would be."""
    blobs = np.zeros_like(u)
    for _ in range(int(rng.integers(5, 9))):
        pu, pv = rng.uniform(-0.55 * radius, 0.55 * radius, 2)
        blobs += np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * 1.2**2))
    return np.clip(blobs, 0, 1) * rng.uniform(0.8, 1.0)


def _acquire(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Microscope nuisance: per-channel gain and background, blur, shot-like noise."""
    out = np.empty_like(image)
    sigma = rng.uniform(0.0, 0.8)
    for c in range(image.shape[0]):
        channel = _gaussian_blur(image[c], sigma) if sigma > 0.3 else image[c]
        gain = rng.uniform(0.5, 1.0)
        background = rng.uniform(0.0, 0.15)
        noise = rng.normal(0.0, rng.uniform(0.01, 0.05), channel.shape)
        out[c] = background + gain * channel + noise
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _gaussian_blur(channel: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(3 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(channel, radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def write_dataset(dest: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write ``dest/<class>/<class>_NNN.tif`` (2-channel uint8, CHW) and ``dest/labels.csv``.

    ``labels.csv`` has ``path,label,group``; the group is the field of view, so the tiles of
    one field never land on both sides of a train/test split.
    """
    import tifffile

    dest = Path(dest)
    rows = []
    for class_index, label in enumerate(CLASSES):
        (dest / label).mkdir(parents=True, exist_ok=True)
        for i in range(spec.images_per_class):
            rng = np.random.default_rng([spec.seed, class_index, i])
            field = f"{label}_{i:03d}"
            for rel, image, extra in _versions(render_field(label, rng, spec.size), label, field, spec):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(dest / rel, image, photometric="minisblack", metadata={"axes": "CYX"})
                rows.append({"path": rel, "label": label, "group": field, **extra})
    with open(dest / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dest / "labels.csv"


def _versions(image: np.ndarray, label: str, field: str, spec: SyntheticSpec):
    """The field as written: once, or at a low and a high magnification (2x apart)."""
    if spec.magnifications is None:
        yield f"{label}/{field}.tif", image, {}
        return
    low, high = spec.magnifications
    c, h, w = image.shape
    half = image.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).round().astype(image.dtype)
    for magnification, version in ((low, half), (high, image)):
        yield (f"{label}/{magnification}X/{field}_{magnification}x.tif", version,
               {"magnification": magnification, "field_id": field})
