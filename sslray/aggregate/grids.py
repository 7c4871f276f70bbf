"""Tile positions -> per-spot grids of tile rows. Pure numpy.

The second-level model sees a spot (TMA spot, slide region, any group of tiles) as the grid
its tiles came from: cell ``(row, col)`` holds the row of the embeddings table whose tile
sits there, or -1 where the spot has no tile (background, tissue gaps, the corners of a
round TMA core). The encoder has no position encoding, so the grid matters only for the
DINO views (``sslray.methods.spot_views``, where ``SpotGrid`` and the windows live).
"""

from __future__ import annotations

import numpy as np

from sslray.methods.spot_views import EMPTY, SpotGrid, pad_rows, random_window

__all__ = ["EMPTY", "SpotGrid", "build_grids", "grid_steps", "infer_step", "pad_rows", "random_window"]


def infer_step(coords: np.ndarray, spot_index: np.ndarray) -> float | None:
    """The smallest positive gap between distinct coordinates of the same spot.

    Tiles are cut on a regular lattice, so neighbouring tiles differ by exactly the tile
    step; gaps (missing tiles) only make some differences larger. None when no spot has two
    distinct coordinates on this axis (every spot is one column or row of tiles).
    """
    coords = np.asarray(coords, dtype=np.float64)
    spot_index = np.asarray(spot_index)
    order = np.lexsort((coords, spot_index))
    c, s = coords[order], spot_index[order]
    diffs = np.diff(c)[np.diff(s) == 0]
    diffs = diffs[diffs > 0]
    return float(diffs.min()) if diffs.size else None


def grid_steps(x: np.ndarray, y: np.ndarray, spot_index: np.ndarray, tile_size: float | None = None) -> tuple[float, float]:
    """(step_x, step_y) in pixels: ``tile_size`` when given, else inferred per axis.

    An axis with no spread in any spot borrows the other axis' step (its cells are all 0
    anyway); with no spread at all every spot is one tile and any step will do.
    """
    if tile_size is not None:
        if tile_size <= 0:
            raise ValueError(f"tile_size must be > 0, got {tile_size}")
        return float(tile_size), float(tile_size)
    sx, sy = infer_step(x, spot_index), infer_step(y, spot_index)
    sx = sx if sx is not None else sy
    sy = sy if sy is not None else sx
    return (sx or 1.0), (sy or 1.0)


def build_grids(
    spot_ids: np.ndarray, x: np.ndarray, y: np.ndarray, tile_size: float | None = None
) -> tuple[list[SpotGrid], tuple[float, float]]:
    """Arrange every spot's tiles on its grid; returns the grids (spots sorted) and the steps.

    ``spot_ids``, ``x``, ``y`` are per table row (x, y: tile top-left in pixels). Cell
    indices are ``round((x - min_x_of_spot) / step_x)``, likewise for y; two tiles of one spot
    in one cell (duplicate positions, or a ``tile_size`` larger than the real step) are an
    error that names the spot.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not len(spot_ids) == len(x) == len(y):
        raise ValueError(f"spot ids, x and y differ in length: {len(spot_ids)}, {len(x)}, {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("tile positions x/y contain missing or non-finite values")
    spots, inverse = np.unique(np.asarray(spot_ids), return_inverse=True)
    inverse = inverse.reshape(-1)
    step_x, step_y = grid_steps(x, y, inverse, tile_size)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(spots) + 1))
    grids = []
    for i, spot in enumerate(spots.tolist()):  # python scalars: clean reprs in errors
        rows = order[bounds[i]: bounds[i + 1]]
        grids.append(_spot_grid(spot, rows, x[rows], y[rows], step_x, step_y))
    return grids, (step_x, step_y)


def _spot_grid(spot: object, rows: np.ndarray, x: np.ndarray, y: np.ndarray, step_x: float, step_y: float) -> SpotGrid:
    col = np.rint((x - x.min()) / step_x).astype(np.int64)
    row = np.rint((y - y.min()) / step_y).astype(np.int64)
    cells = np.full((int(row.max()) + 1, int(col.max()) + 1), EMPTY, dtype=np.int64)
    flat = row * cells.shape[1] + col
    unique, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        crowded = flat == unique[counts > 1][0]
        r, c = divmod(int(unique[counts > 1][0]), cells.shape[1])
        raise ValueError(
            f"spot {spot!r}: {int((counts > 1).sum())} grid cell(s) hold more than one tile, e.g. cell (row {r}, "
            f"col {c}) with tiles at x={x[crowded].tolist()}, y={y[crowded].tolist()} (grid step {step_x:g} x "
            f"{step_y:g} px); remove the duplicate tiles or set tile_size to the real tile step"
        )
    cells[row, col] = rows
    return SpotGrid(spot, cells)
