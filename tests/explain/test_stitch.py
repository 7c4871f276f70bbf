"""Stitching: tiles land exactly at their (x, y), overlaps average, slides' level-0 footprints, the canvas
never finer than the tiles nor larger than max_side, and the foreground and tissue masks."""

import numpy as np
import pytest

from sslray.explain.stitch import (
    channel_mask,
    grid_step,
    masked,
    plan_canvas,
    resample_mask,
    slide_footprint,
    stitch,
)


def _constant(values: list[float], size: int = 2) -> np.ndarray:
    return np.stack([np.full((1, size, size), v, np.float32) for v in values])


def test_tiles_land_at_their_pixels_and_overlaps_average():
    xs, ys = np.array([10, 14, 12]), np.array([20, 20, 22])  # the third overlaps both others
    canvas = plan_canvas(xs, ys, footprint=4, tile_pixels=4, max_side=1000)
    assert canvas.scale == 1 and canvas.tile == 4 and canvas.shape == (6, 8) and (canvas.x0, canvas.y0) == (10, 20)
    out = stitch(_constant([1, 2, 3]), canvas, xs, ys)
    expected = np.full((6, 8), np.nan)
    expected[0:4, 0:4] = 1
    expected[0:4, 4:8] = 2
    expected[2:6, 2:6] = 3
    expected[2:4, 2:4] = (1 + 3) / 2
    expected[2:4, 4:6] = (2 + 3) / 2
    np.testing.assert_array_equal(out[0], expected.astype(np.float32))


def test_a_patch_grid_is_upsampled_onto_the_tile():
    maps = np.array([[[[0, 1], [2, 3]]]], np.float32)  # a 2 x 2 patch grid
    canvas = plan_canvas(np.array([0]), np.array([0]), footprint=8, tile_pixels=8, max_side=100)
    out = stitch(maps, canvas, np.array([0]), np.array([0]))[0]
    assert out.shape == (8, 8) and out[0, 0] == 0 and out[-1, -1] == 3 and out[0, -1] == 1 and out[-1, 0] == 2
    assert np.all(np.diff(out[0]) >= 0)


def test_slide_tiles_cover_their_level0_footprint():
    footprint = slide_footprint(mpp=1.0, tile_size=4, level0_mpp=0.25)  # read at 4x downsample
    assert footprint == 16
    xs, ys = np.array([1000, 1016, 1032]), np.array([500, 500, 516])  # level-0 pixels, side by side
    canvas = plan_canvas(xs, ys, footprint, tile_pixels=4, max_side=1000)
    assert canvas.scale == 0.25 and canvas.tile == 4 and canvas.shape == (8, 12)  # the tiles' own pixels
    out = stitch(_constant([1, 2, 3]), canvas, xs, ys)[0]
    assert (out[0:4, 0:4] == 1).all() and (out[0:4, 4:8] == 2).all() and (out[4:8, 8:12] == 3).all()
    assert np.isnan(out[4:8, 0:8]).all() and np.isnan(out[0:4, 8:12]).all()
    assert grid_step(xs, ys) == 16 and grid_step(np.array([3]), np.array([4])) is None
    with pytest.raises(ValueError, match="resolutions must be positive"):
        slide_footprint(0.5, 224, 0)


def test_the_canvas_is_at_most_max_side_pixels():
    xs = np.arange(0, 1000, 100)
    canvas = plan_canvas(xs, np.zeros(10), footprint=100, tile_pixels=100, max_side=50)
    assert canvas.scale == 0.05 and canvas.tile == 5 and canvas.shape == (5, 50)
    rows, cols = canvas.offsets(xs, np.zeros(10))
    assert cols.tolist() == list(range(0, 50, 5)) and set(rows.tolist()) == {0}


def test_masks_blank_background_and_follow_a_thumbnail_scale():
    plane = np.full((6, 6), 10.0)
    plane[1:3, 1:3] = 200.0  # a bright nucleus
    plane[5, 5] = np.nan  # off the tiles
    mask = channel_mask(plane)
    assert mask[1:3, 1:3].all() and mask.sum() == 4
    maps = masked(np.ones((2, 6, 6), np.float32), mask)
    assert np.isfinite(maps[:, 1:3, 1:3]).all() and np.isnan(maps[:, 0]).all()
    canvas = plan_canvas(np.array([0]), np.array([0]), footprint=8, tile_pixels=4, max_side=100)  # 0.5 px / px
    thumb = np.zeros((2, 2), bool)
    thumb[0, 1] = True  # the top-right quarter of an 8 x 8 image, at 0.25 thumbnail px per image px
    np.testing.assert_array_equal(resample_mask(thumb, 0.25, canvas), np.kron(thumb, np.ones((2, 2), bool)))
