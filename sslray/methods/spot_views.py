"""The grid batch of the ``spot_dino`` method and its DINO views. Pure numpy + torch.

A spot (TMA spot, slide region, any group of tiles) is the grid its tiles came from. In a
training batch each spot is a (H, W, D) slab of its tile embeddings, anchored at the top-left
cell, with NaN in every cell that holds no tile (background, tissue gaps, the round corners of
a TMA core, and the padding up to the largest spot): one float tensor (B, H, W, D), so the
batch travels through Ray Data, the shuffle buffer and the training step like a batch of tiles.

A view is a spatially contiguous window of a spot, as a crop is of an image: two global and
``n_local`` local windows with random token dropout, each view a (B, N, D) tensor of tokens
with NaN where padded (``SpotEncoder`` reads the mask off the NaNs). The windows are those of
Atarsaikhan et al. 2025 as written for sslray (docs/methods/spot_aggregator.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EMPTY = -1


@dataclass
class SpotViewConfig:
    """DINO views of a spot: windows of its grid, sides in cells, plus token dropout."""

    global_window: int = 14
    local_window: int = 7
    n_local: int = 6
    min_side_fraction: float = 0.5  # a window side is drawn from [ceil(fraction * cap), cap]
    token_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.global_window < 1 or self.local_window < 1:
            raise ValueError(f"views.global_window and views.local_window must be >= 1, got "
                             f"{self.global_window}, {self.local_window}")
        if self.n_local < 0:
            raise ValueError(f"views.n_local must be >= 0, got {self.n_local}")
        if not 0 < self.min_side_fraction <= 1:
            raise ValueError(f"views.min_side_fraction must be in (0, 1], got {self.min_side_fraction}")
        if not 0 <= self.token_dropout < 1:
            raise ValueError(f"views.token_dropout must be in [0, 1), got {self.token_dropout}")


@dataclass
class SpotGrid:
    """One spot: ``cells[r, c]`` is the row (of a table or a flat token matrix) of the tile at cell (r, c), or -1."""

    spot: object
    cells: np.ndarray  # (H, W) int64

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool occupancy."""
        return self.cells >= 0

    @property
    def rows(self) -> np.ndarray:
        """The spot's rows in row-major grid order."""
        return self.cells[self.cells >= 0]

    @property
    def n_tiles(self) -> int:
        return int((self.cells >= 0).sum())


def grid_batch(embeddings: np.ndarray, grids: list[SpotGrid]) -> np.ndarray:
    """(n_spots, H, W, D) float32: each spot's tile embeddings on its grid, NaN in empty cells.

    H and W are those of the largest grid, so every spot of a table fits one tensor shape.
    """
    height = max(g.cells.shape[0] for g in grids)
    width = max(g.cells.shape[1] for g in grids)
    out = np.full((len(grids), height, width, embeddings.shape[1]), np.nan, dtype=np.float32)
    for i, g in enumerate(grids):
        r, c = np.nonzero(g.mask)
        out[i, r, c] = embeddings[g.cells[r, c]]
    return out


def batch_grids(occupied: np.ndarray) -> list[SpotGrid]:
    """(B, H, W) occupancy of a grid batch -> one grid per spot, cropped to its tiles, whose
    cells index the batch flattened to (B * H * W) tokens."""
    b, h, w = occupied.shape
    flat = np.arange(b * h * w, dtype=np.int64).reshape(b, h, w)
    grids = []
    for i in range(b):
        rows, cols = np.nonzero(occupied[i])
        cells = np.where(occupied[i], flat[i], EMPTY)[: rows.max() + 1, : cols.max() + 1]
        grids.append(SpotGrid(i, cells))
    return grids


def grid_views(batch: torch.Tensor, cfg: SpotViewConfig, rng: np.random.Generator) -> list[torch.Tensor]:
    """Two global and ``n_local`` local windows of every spot of a (B, H, W, D) grid batch.

    Globals are padded to one length and locals to another, so the student runs on two
    batches, as DINO runs on its two crop sizes.
    """
    b, h, w, d = batch.shape
    grids = batch_grids(~batch.isnan().any(-1).cpu().numpy())
    tokens = batch.reshape(b * h * w, d)

    def windows(side: int, count: int) -> list[torch.Tensor]:
        rows = [random_window(g, side, cfg.min_side_fraction, rng, cfg.token_dropout) for _ in range(count)
                for g in grids]
        idx, mask = pad_rows(rows)
        idx_t, mask_t = torch.from_numpy(idx).to(batch.device), torch.from_numpy(mask).to(batch.device)
        views = tokens[idx_t].masked_fill(~mask_t.unsqueeze(-1), float("nan"))
        return list(views.chunk(count)) if count else []

    return windows(cfg.global_window, 2) + windows(cfg.local_window, cfg.n_local)


def random_window(
    grid: SpotGrid, max_side: int, min_side_fraction: float, rng: np.random.Generator, dropout: float = 0.0
) -> np.ndarray:
    """Rows of the tiles in a random window of ``grid``, minus randomly dropped tiles.

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
