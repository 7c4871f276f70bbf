"""One explanation picture: the stitched image, then each map drawn over it (and their mean for several heads).

The image is the tiles' own pixels stitched like the maps (``stitch``), so the picture needs no
file beyond the input: RGB tiles are shown as stored (divided by the intensity scale), other
channels as grey scaled to their 99.5th percentile. Each map is coloured from its own 1st to
99th percentile and left transparent where it is NaN (no tile, or masked). The figure helpers
are the evaluation pictures' (``sslray.evaluate.attention_maps``); matplotlib runs on its own
Agg canvas. No Ray.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sslray.evaluate.attention_maps import new_figure, save_png

MAX_COLUMNS = 4


def display_image(pixels: np.ndarray, channels: list[str], scale: float) -> np.ndarray:
    """(C, H, W) stitched pixels (NaN off the tiles) -> (H, W, 3) RGB or (H, W) grey in [0, 1]."""
    if list(channels) == ["R", "G", "B"]:
        return np.clip(np.nan_to_num(np.moveaxis(pixels, 0, -1) / scale, nan=1.0), 0, 1)  # glass-white gaps
    grey = np.nanmean(pixels, axis=0) if len(pixels) > 1 else pixels[0]
    top = np.nanpercentile(grey, 99.5) if np.isfinite(grey).any() else 1.0
    return np.clip(np.nan_to_num(grey / max(float(top), 1e-12), nan=0.0), 0, 1)


def plot_overlays(image: np.ndarray, maps: np.ndarray, names: list[str], title: str, path: str | Path) -> str:
    """The image, the mean of the maps when there are several, then every map over the image."""
    panels = [("image", None)] + ([("mean of heads", np.mean(maps, axis=0))] if len(maps) > 1 else [])
    panels += list(zip(names, maps, strict=True))
    columns = min(MAX_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    aspect = image.shape[0] / max(image.shape[1], 1)
    figure = new_figure(3.2 * columns, 3.2 * rows * max(aspect, 0.3) + 0.6)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, (name, values) in zip(axes, panels, strict=False):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if values is not None:
            _overlay(figure, ax, values)
        ax.set_title(name, fontsize="small")
    for ax in axes:
        ax.set_axis_off()
    figure.suptitle(title, fontsize="medium")
    return save_png(figure, path, title)


def _overlay(figure, ax, values: np.ndarray) -> None:
    finite = values[np.isfinite(values)]
    low, high = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    shown = ax.imshow(np.ma.masked_invalid(values), cmap="inferno", alpha=0.55, vmin=float(low),
                      vmax=float(max(high, low + 1e-12)), interpolation="bilinear")
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
