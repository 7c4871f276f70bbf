"""The grid batch of spot_dino and its views: windows of each spot's own tiles, NaN where padded."""

import numpy as np
import torch

from sslray.aggregate.grids import build_grids
from sslray.methods.spot_views import SpotViewConfig, batch_grids, grid_batch, grid_views
from tests.aggregate.tables import tiles_of


def _batch(n_spots: int = 6):
    tiles = tiles_of(n_spots)
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    return tiles, grids, grid_batch(tiles["embedding"], grids)


def test_grid_batch_puts_each_tile_in_its_cell_and_nan_elsewhere():
    tiles, grids, batch = _batch()
    assert batch.shape == (6, max(g.cells.shape[0] for g in grids), max(g.cells.shape[1] for g in grids), 12)
    for i, g in enumerate(grids):
        r, c = np.nonzero(g.mask)
        np.testing.assert_array_equal(batch[i, r, c], tiles["embedding"][g.cells[r, c]])
        assert np.isnan(batch[i]).any(-1).sum() == batch.shape[1] * batch.shape[2] - g.n_tiles


def test_batch_grids_recover_each_spots_own_grid_shape():
    _, grids, batch = _batch()
    recovered = batch_grids(~np.isnan(batch).any(-1))
    assert [g.cells.shape for g in recovered] == [g.cells.shape for g in grids]
    assert [g.n_tiles for g in recovered] == [g.n_tiles for g in grids]


def test_views_are_bounded_windows_of_each_spots_own_tiles():
    _, grids, batch = _batch()
    cfg = SpotViewConfig(global_window=4, local_window=2, n_local=2)
    views = grid_views(torch.from_numpy(batch), cfg, np.random.default_rng(0))
    assert len(views) == 4 and all(v.shape[0] == 6 for v in views)
    assert views[0].shape == views[1].shape and views[2].shape == views[3].shape
    valid = [~v.isnan().any(-1) for v in views]
    assert all(m.sum(1).min() >= 1 for m in valid)  # never an empty view
    assert valid[0].sum(1).max() <= 16 and valid[2].sum(1).max() <= 4  # 4 x 4 and 2 x 2 windows
    for i in range(6):  # a view's tokens are tiles of its own spot
        own = {tuple(np.round(t, 5)) for t in batch[i].reshape(-1, 12) if not np.isnan(t).any()}
        for v, m in zip(views, valid, strict=True):
            assert {tuple(np.round(t, 5)) for t in v[i][m[i]].numpy()} <= own
