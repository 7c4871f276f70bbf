"""Spot grids from tile positions, and the random windows DINO's views are cut from."""

import numpy as np
import pytest

from sslray.aggregate.grids import EMPTY, build_grids, grid_steps, infer_step, pad_rows, random_window


def _cells(spot, positions, tile_size=None):
    xs, ys = zip(*positions)
    grids, steps = build_grids(np.array([spot] * len(xs)), np.array(xs), np.array(ys), tile_size)
    return grids[0], steps


def test_gaps_become_empty_cells_and_rows_keep_table_order():
    # an L of tiles with a hole at (row 0, col 1) and a missing column 2; origin is not (0, 0)
    grid, steps = _cells("a", [(1000, 500), (1000, 628), (1128, 628), (1384, 500)])
    assert steps == (128.0, 128.0)
    assert grid.cells.tolist() == [[0, EMPTY, EMPTY, 3], [1, 2, EMPTY, EMPTY]]
    assert grid.mask.sum() == grid.n_tiles == 4
    assert grid.rows.tolist() == [0, 3, 1, 2]  # row-major over the grid


def test_single_tile_spot_is_a_one_cell_grid():
    grid, _ = _cells("only", [(4096, 2048)])
    assert grid.cells.tolist() == [[0]] and grid.n_tiles == 1


def test_step_is_the_smallest_gap_within_spots_not_across_them():
    # spots a and b sit 5 px apart from each other, but within each spot tiles are 64 px apart
    spots = np.array(["a", "a", "b", "b", "c"])
    x = np.array([0, 64, 5, 197, 7])
    y = np.array([0, 0, 0, 0, 0])
    grids, steps = build_grids(spots, x, y)
    assert steps == (64.0, 64.0)  # y has no spread: borrows x's step
    assert [g.spot for g in grids] == ["a", "b", "c"]
    assert grids[1].cells.tolist() == [[2, EMPTY, EMPTY, 3]]
    assert infer_step(x, np.array([0, 0, 1, 1, 2])) == 64.0
    assert infer_step(np.zeros(3), np.array([0, 1, 2])) is None


def test_axes_may_have_different_steps_and_tile_size_overrides_inference():
    spots = np.zeros(4, dtype=int)
    x, y = np.array([0, 100, 0, 100]), np.array([0, 0, 50, 50])
    assert grid_steps(x, y, spots) == (100.0, 50.0)
    grids, _ = build_grids(spots, x, y, tile_size=50)
    assert grids[0].cells.tolist() == [[0, EMPTY, 1], [2, EMPTY, 3]]


def test_no_spread_anywhere_means_single_tile_spots():
    grids, steps = build_grids(np.array([1, 2, 3]), np.array([5, 9, 11]), np.array([0, 0, 0]))
    assert steps == (1.0, 1.0) and all(g.cells.shape == (1, 1) for g in grids)


def test_duplicate_positions_name_the_spot():
    with pytest.raises(ValueError, match=r"spot 'TMA_B7'.*more than one tile"):
        _cells("TMA_B7", [(0, 0), (256, 0), (256, 0)])


def test_tile_size_larger_than_the_real_step_collides_clearly():
    with pytest.raises(ValueError, match="set tile_size to the real tile step"):
        _cells("s", [(0, 0), (64, 0), (128, 0)], tile_size=256)


def test_bad_positions_and_tile_size_are_rejected():
    with pytest.raises(ValueError, match="non-finite"):
        build_grids(np.array([0, 0]), np.array([0.0, np.nan]), np.array([0.0, 0.0]))
    with pytest.raises(ValueError, match="tile_size must be > 0"):
        build_grids(np.array([0]), np.array([0]), np.array([0]), tile_size=0)


def test_random_windows_are_non_empty_contiguous_and_capped():
    rng = np.random.default_rng(0)
    mask = rng.random((6, 5)) < 0.5
    mask[0, 0] = True
    ys, xs = np.nonzero(mask)
    grid = build_grids(np.zeros(len(xs)), xs * 32, ys * 32)[0][0]
    where = {int(r): divmod(i, grid.cells.shape[1]) for i, r in enumerate(grid.cells.reshape(-1)) if r >= 0}
    for _ in range(300):
        rows = random_window(grid, max_side=3, min_side_fraction=0.5, rng=rng)
        assert len(rows) >= 1 and len(set(rows.tolist())) == len(rows)
        cells = np.array([where[int(r)] for r in rows])
        assert np.ptp(cells[:, 0]) < 3 and np.ptp(cells[:, 1]) < 3
        # contiguity: every tile of the spot inside the bounding box of the window's tiles is in it (no dropout)
        r0, c0 = cells.min(0)
        r1, c1 = cells.max(0)
        box = grid.cells[r0: r1 + 1, c0: c1 + 1]
        assert set(box[box >= 0].tolist()) == set(rows.tolist())


def test_window_sides_span_the_configured_range():
    grid = build_grids(np.zeros(64), np.tile(np.arange(8), 8), np.repeat(np.arange(8), 8))[0][0]
    rng = np.random.default_rng(1)
    sizes = {len(random_window(grid, 4, 0.5, rng)) for _ in range(400)}  # full grid: size = h * w, sides 2..4
    assert sizes == {h * w for h in (2, 3, 4) for w in (2, 3, 4)}


def test_token_dropout_drops_tiles_but_never_empties_a_view():
    grid = build_grids(np.zeros(25), np.tile(np.arange(5), 5), np.repeat(np.arange(5), 5))[0][0]
    rng = np.random.default_rng(2)
    full = [len(random_window(grid, 5, 1.0, rng)) for _ in range(200)]
    dropped = [len(random_window(grid, 5, 1.0, rng, dropout=0.5)) for _ in range(200)]
    assert set(full) == {25}
    assert 8 < np.mean(dropped) < 17 and min(dropped) >= 1
    tiny = build_grids(np.zeros(2), np.array([0, 1]), np.array([0, 0]))[0][0]
    assert all(len(random_window(tiny, 2, 1.0, rng, dropout=0.99)) >= 1 for _ in range(50))


def test_pad_rows():
    rows, mask = pad_rows([np.array([4, 2]), np.array([7]), np.array([1, 3, 5])])
    assert rows.tolist() == [[4, 2, 0], [7, 0, 0], [1, 3, 5]]
    assert mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
