"""Foreground detection: which pixels hold cells or tissue, for tiles and slide thumbnails."""

from __future__ import annotations

import numpy as np


def otsu_threshold(image: np.ndarray) -> tuple[float, bool]:
    """Otsu threshold of the channel-mean image, and whether the background is the bright side.

    The background is taken to be the larger class: true of most slides (white glass) and
    fluorescence fields (dark background).
    """
    return _otsu(image.astype(np.float32).mean(axis=0))


def _otsu(grey: np.ndarray) -> tuple[float, bool]:
    hist, edges = np.histogram(grey, bins=256)
    centers = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    mean0 = np.cumsum(hist * centers) / np.maximum(weight0, 1)
    mean1 = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    threshold = float(centers[int(np.argmax(between))])
    bright_background = float((grey > threshold).mean()) > 0.5
    return threshold, bright_background


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """(H, W) True where a (C, H, W) image holds cells or tissue, by Otsu on its channel mean."""
    grey = image.astype(np.float32).mean(axis=0)
    threshold, bright_background = _otsu(grey)
    return grey < threshold if bright_background else grey > threshold
