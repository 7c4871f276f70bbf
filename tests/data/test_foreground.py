"""Foreground: Otsu on the whole image, either polarity, decides each tile's tissue_fraction."""

import numpy as np

from sslray.data.foreground import foreground_mask, otsu_threshold


def test_otsu_finds_the_foreground_side():
    image = np.zeros((1, 40, 40), np.uint8)
    image[:, :10, :10] = 200  # small bright object on dark background
    threshold, bright_background = otsu_threshold(image)
    assert 0 < threshold < 200 and not bright_background
    assert foreground_mask(image).sum() == 100 and foreground_mask(255 - image).sum() == 100  # either polarity


def test_a_dark_object_on_a_bright_background_is_the_foreground_and_channels_are_averaged():
    bright = np.full((2, 16, 16), 200, np.uint8)
    bright[0, :4, :4] = 0  # dark in one channel only (brightfield stain): the channel mean still shows it
    threshold, bright_background = otsu_threshold(bright)
    assert bright_background and 100 <= threshold < 200
    mask = foreground_mask(bright)
    assert mask.sum() == 16 and mask[:4, :4].all()
