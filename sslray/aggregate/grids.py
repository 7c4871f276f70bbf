"""Tile positions -> per-spot grids of tile rows, and random windows of them. Pure numpy.

The second-level model sees a spot (TMA spot, slide region, any group of tiles) as the grid
its tiles came from: cell ``(row, col)`` holds the row of the embeddings table whose tile
sits there, or -1 where the spot has no tile (background, tissue gaps, the corners of a
round TMA core). The encoder has no position encoding, so the grid matters only for the
DINO views: a view is a spatially contiguous window of the spot, as a crop is of an image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EMPTY = -1


@dataclass
class SpotGrid:
    """One spot: ``cells[r, c]`` is the table row of the tile at grid cell (r, c), or -1."""

    spot: object
    cells: np.ndarray  # (H, W) int64

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool occupancy."""
        return self.cells >= 0

    @property
    def rows(self) -> np.ndarray:
        """The spot's table rows in row-major grid order."""
        return self.cells[self.cells >= 0]

    @property
    def n_tiles(self) -> int:
        return int((self.cells >= 0).sum())


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


def random_window(
    grid: SpotGrid, max_side: int, min_side_fraction: float, rng: np.random.Generator, dropout: float = 0.0
) -> np.ndarray:
    """Table rows of the tiles in a random window of ``grid``, minus randomly dropped tiles.

    Each side is drawn uniformly from ``[ceil(min_side_fraction * cap), cap]`` with
    ``cap = min(max_side, grid side)``. The window is placed around a random occupied cell, so
    it always holds at least one tile, and that tile survives the dropout: a view is never
    empty however sparse the spot.
    """
    mask = grid.mask
    occupied = np.flatnonzero(mask)
    anchor = int(occupied[rng.integers(len(occupied))])
    ar, ac = divmod(anchor, mask.shape[1])
    r0, r1 = _window_span(ar, mask.shape[0], max_side, min_side_fraction, rng)
    c0, c1 = _window_span(ac, mask.shape[1], max_side, min_side_fraction, rng)
    window = grid.cells[r0:r1, c0:c1]
    rows = window[window >= 0]
    if dropout > 0 and len(rows) > 1:
        keep = rng.random(len(rows)) >= dropout
        keep[rows == grid.cells[ar, ac]] = True
        rows = rows[keep]
    return rows


def _window_span(anchor: int, size: int, max_side: int, min_fraction: float, rng: np.random.Generator) -> tuple[int, int]:
    cap = max(min(max_side, size), 1)
    side = int(rng.integers(max(int(np.ceil(min_fraction * cap)), 1), cap + 1))
    start = int(rng.integers(max(0, anchor - side + 1), min(anchor, size - side) + 1))
    return start, start + side


def pad_rows(views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length row lists -> (B, N) int64 rows (0 where padded) and a (B, N) bool mask."""
    width = max((len(v) for v in views), default=0)
    rows = np.zeros((len(views), max(width, 1)), dtype=np.int64)
    mask = np.zeros(rows.shape, dtype=bool)
    for i, v in enumerate(views):
        rows[i, : len(v)] = v
        mask[i, : len(v)] = True
    return rows, mask
