"""Per-tile maps back on the image: each upsampled to its tile's footprint and placed at its (x, y).

Positions are the manifest's: fields in pixels, slides in level-0 pixels. A slide tile covers
``tile_size * mpp / level0_mpp`` level-0 pixels (``mpp`` is the tiling's target resolution, a
manifest column; the level-0 resolution is the slide's), so the canvas is laid out in image
pixels and drawn at ``scale`` canvas pixels per image pixel: never finer than the tiles' own
pixels, and at most ``max_side`` pixels on the longer side. Overlapping tiles (a stride below the
tile size) are averaged; a pixel no tile covers is NaN. The same placement stitches the tiles'
pixels into the picture the maps are drawn over. Masks (a channel's foreground by Otsu, or a
slide's tissue mask) blank the map where there are no cells or no tissue. No Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sslray.data.foreground import foreground_mask


@dataclass(frozen=True)
class Canvas:
    """Where tiles land: image point (x0, y0) is canvas pixel (0, 0), ``scale`` canvas px per image px."""

    x0: float
    y0: float
    scale: float
    tile: int  # a tile's edge on the canvas, in canvas pixels
    shape: tuple[int, int]  # (H, W)

    def offsets(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The canvas (row, column) of each tile's top-left corner."""
        rows = np.rint((np.asarray(ys, np.float64) - self.y0) * self.scale).astype(np.int64)
        cols = np.rint((np.asarray(xs, np.float64) - self.x0) * self.scale).astype(np.int64)
        return rows, cols

    def to_json(self) -> dict:
        return {"x0": self.x0, "y0": self.y0, "scale": self.scale, "tile": self.tile, "shape": list(self.shape)}


def plan_canvas(xs: np.ndarray, ys: np.ndarray, footprint: float, tile_pixels: int, max_side: int) -> Canvas:
    """The canvas covering every tile of ``footprint`` image pixels, each stored as ``tile_pixels`` pixels."""
    if len(xs) == 0 or footprint <= 0:
        raise ValueError(f"a canvas needs at least one tile and a positive footprint, got {len(xs)} and {footprint}")
    x0, y0 = float(np.min(xs)), float(np.min(ys))
    extent = max(float(np.max(xs)) - x0, float(np.max(ys)) - y0) + footprint
    scale = min(tile_pixels / footprint, max_side / extent)
    tile = max(1, round(footprint * scale))
    canvas = Canvas(x0, y0, scale, tile, (0, 0))
    rows, cols = canvas.offsets(xs, ys)
    return Canvas(x0, y0, scale, tile, (int(rows.max()) + tile, int(cols.max()) + tile))


def slide_footprint(mpp: float, tile_size: int, level0_mpp: float) -> float:
    """Level-0 pixels one slide tile covers: it was read at ``mpp`` from a scan at ``level0_mpp``."""
    if mpp <= 0 or level0_mpp <= 0:
        raise ValueError(f"resolutions must be positive, got mpp {mpp} and level-0 mpp {level0_mpp}")
    return tile_size * mpp / level0_mpp


def grid_step(xs: np.ndarray, ys: np.ndarray) -> float | None:
    """The smallest gap between distinct tile positions (the tiling's step), None for a single tile."""
    gaps = np.concatenate([np.diff(np.unique(np.asarray(v, np.float64))) for v in (xs, ys)])
    return float(gaps.min()) if len(gaps) else None


def stitch(maps: np.ndarray, canvas: Canvas, xs: np.ndarray, ys: np.ndarray, batch: int = 64) -> np.ndarray:
    """(N, M, h, w) per-tile maps (or tile pixels) -> (M, H, W) float32 canvas, overlaps averaged, NaN uncovered."""
    total = np.zeros((maps.shape[1], *canvas.shape), np.float64)
    count = np.zeros(canvas.shape, np.int64)
    rows, cols = canvas.offsets(xs, ys)
    t = canvas.tile
    for start in range(0, len(maps), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(maps[start : start + batch], np.float32))
        sized = torch.nn.functional.interpolate(chunk, size=(t, t), mode="bilinear", align_corners=False,
                                                antialias=True).numpy()
        for i, tile in enumerate(sized, start):
            total[:, rows[i] : rows[i] + t, cols[i] : cols[i] + t] += tile
            count[rows[i] : rows[i] + t, cols[i] : cols[i] + t] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def channel_mask(plane: np.ndarray) -> np.ndarray:
    """(H, W) True where a stitched channel (NaN off the tiles) is foreground by Otsu, e.g. DAPI's nuclei."""
    covered = np.isfinite(plane)
    if not covered.any():
        return covered
    mask = np.zeros(plane.shape, bool)
    mask[covered] = foreground_mask(plane[covered][None, None])[0]
    return mask


def resample_mask(mask: np.ndarray, mask_scale: float, canvas: Canvas) -> np.ndarray:
    """A mask at ``mask_scale`` mask px per image px (a slide thumbnail's) on the canvas, nearest pixel."""
    h, w = canvas.shape
    xs = canvas.x0 + (np.arange(w) + 0.5) / canvas.scale
    ys = canvas.y0 + (np.arange(h) + 0.5) / canvas.scale
    cols = np.clip((xs * mask_scale).astype(np.int64), 0, mask.shape[1] - 1)
    rows = np.clip((ys * mask_scale).astype(np.int64), 0, mask.shape[0] - 1)
    return mask[rows[:, None], cols[None, :]]


def masked(maps: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(M, H, W) maps, NaN where ``mask`` (H, W) is False."""
    return maps if mask is None else np.where(mask[None], maps, np.nan).astype(np.float32)
