"""The explanation picture: RGB tiles as stored, other channels as grey, a panel per map plus their mean."""

import numpy as np
from PIL import Image

from sslray.explain.pictures import display_image, plot_overlays


def test_rgb_is_shown_as_stored_and_other_channels_as_grey_to_their_high_percentile():
    rgb = np.full((3, 2, 2), 255.0)
    rgb[0, 0, 0] = 0
    rgb[:, 1, 1] = np.nan  # off the tiles: white glass
    shown = display_image(rgb, ["R", "G", "B"], 255.0)
    assert shown.shape == (2, 2, 3) and shown[0, 0].tolist() == [0, 1, 1] and shown[1, 1].tolist() == [1, 1, 1]
    grey = display_image(np.array([[[0.0, 50.0], [100.0, np.nan]]]), ["DAPI"], 255.0)
    assert grey.shape == (2, 2) and grey[0, 0] == 0 and grey[1, 0] == 1 and grey[1, 1] == 0


def test_an_overlay_has_the_image_the_mean_and_every_map(tmp_path):
    maps = np.random.default_rng(0).random((6, 20, 30)).astype(np.float32)
    maps[:, :5] = np.nan
    path = plot_overlays(np.zeros((20, 30)), maps, [f"head{i}" for i in range(6)], "img: attention", tmp_path / "o.png")
    with Image.open(path) as png:
        assert png.info["Title"] == "img: attention" and png.width > png.height  # 8 panels in 2 rows of 4
    single = plot_overlays(np.zeros((20, 30, 3)), maps[:1], ["gradcam"], "g", tmp_path / "g.png")
    with Image.open(single) as png:
        assert png.width < 1000  # 2 panels: the image and the one map
