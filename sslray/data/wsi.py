"""Whole-slide images (SVS, NDPI, pyramidal TIFF) tiled at a target resolution.

Read through tiffslide (pure Python on tifffile + imagecodecs, OpenSlide's API, works on
fsspec URLs) rather than OpenSlide's C library, so installs stay wheel-only. Tiles are cut
at a physical resolution (``mpp``, microns per pixel, or an objective magnification), read
from the pyramid level that is at least that fine and resampled to the tile size. Background
is skipped with an Otsu threshold on a thumbnail, so only tiles with tissue are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslray.data.foreground import otsu_threshold
from sslray.data.readers import ImageReadError, image_id_of

SLIDE_SUFFIXES = {".svs", ".ndpi", ".scn", ".bif", ".mrxs"}
THUMBNAIL_EDGE = 1024


@dataclass(frozen=True)
class SlideTiling:
    tile_size: int
    mpp: float | None = None  # target microns per pixel
    magnification: float | None = None  # or a target objective power (20 = 20x)
    mpp_override: float | None = None  # the slide's level-0 mpp when its metadata lacks it
    min_tissue: float = 0.25  # fraction of a tile that must be tissue
    batch: int = 256  # tiles per yielded batch, bounding memory on large slides
    stride: int | None = None  # grid step in target-resolution pixels; None: tile_size (tiles side by side)


def is_slide(path: Path) -> bool:
    return path.suffix.lower() in SLIDE_SUFFIXES


def base_mpp(props: dict, path: Path, override: float | None) -> float:
    if override:
        return float(override)
    mpp = props.get("tiffslide.mpp-x")
    if not mpp:
        raise ImageReadError(f"{path}: the slide has no resolution metadata (mpp); pass --mpp-override MICRONS")
    return float(mpp)


def target_downsample(props: dict, path: Path, tiling: SlideTiling) -> tuple[float, float]:
    """(downsample from level 0, target mpp) for the requested resolution."""
    level0 = base_mpp(props, path, tiling.mpp_override)
    if tiling.mpp is not None:
        target = tiling.mpp
    elif tiling.magnification is not None:
        power = props.get("tiffslide.objective-power")
        if not power:
            raise ImageReadError(f"{path}: no objective power in the metadata; give --mpp instead of --magnification")
        target = level0 * float(power) / tiling.magnification
    else:
        raise ImageReadError(f"{path}: a whole-slide image needs a target resolution: --mpp or --magnification")
    if target < level0 * 0.99:
        raise ImageReadError(f"{path}: target {target:.3f} mpp is finer than the scan ({level0:.3f} mpp)")
    return target / level0, target


def tissue_mask(slide) -> tuple[np.ndarray, float]:
    """Boolean tissue mask of a thumbnail and its scale (thumbnail px per level-0 px).

    Tissue is darker than the glass and coloured (stained); the saturation test drops grey
    pen marks and dust that Otsu alone would keep.
    """
    width, height = slide.dimensions
    scale = min(1.0, THUMBNAIL_EDGE / max(width, height))
    thumb = np.asarray(slide.get_thumbnail((max(1, int(width * scale)), max(1, int(height * scale)))).convert("RGB"))
    grey = thumb.astype(np.float32).mean(axis=2)
    threshold, _ = otsu_threshold(grey[None])
    saturation = thumb.max(axis=2).astype(np.float32) - thumb.min(axis=2)
    mask = (grey < threshold) & (saturation > 15)
    return mask, thumb.shape[1] / width


def tile_slide(path: Path, tiling: SlideTiling, rel: str) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """Yield batches of (N, 3, T, T) uint8 tiles with tissue, and their manifest rows.

    The grid steps ``stride`` target pixels (``stride * downsample`` at level 0) from the
    top-left corner; the right and bottom strips narrower than a tile are dropped.
    """
    import tiffslide
    from PIL import Image

    try:
        slide = tiffslide.TiffSlide(str(path))
    except Exception as err:
        raise ImageReadError(f"{path}: cannot open as a whole-slide image ({type(err).__name__}: {err})") from None
    with slide:
        downsample, mpp = target_downsample(dict(slide.properties), path, tiling)
        level = slide.get_best_level_for_downsample(downsample)
        read = max(1, round(tiling.tile_size * downsample / slide.level_downsamples[level]))
        window = tiling.tile_size * downsample  # level-0 pixels per tile
        step = (tiling.stride or tiling.tile_size) * downsample  # level-0 pixels between tile origins
        mask, mask_scale = tissue_mask(slide)
        width, height = slide.dimensions
        if width < window or height < window:
            raise ImageReadError(f"{path}: slide {width}x{height} is smaller than one tile at {mpp:.3f} mpp")
        tiles, rows = [], []
        for y in np.arange(0, height - window + 1, step):
            for x in np.arange(0, width - window + 1, step):
                fraction = _mask_fraction(mask, mask_scale, x, y, window)
                if fraction < tiling.min_tissue:
                    continue
                region = slide.read_region((int(x), int(y)), level, (read, read)).convert("RGB")
                if read != tiling.tile_size:
                    region = region.resize((tiling.tile_size, tiling.tile_size), Image.BILINEAR)
                tiles.append(np.moveaxis(np.asarray(region), -1, 0))
                rows.append(_row(rel, int(x), int(y), level, mpp, fraction))
                if len(tiles) == tiling.batch:
                    yield np.stack(tiles), rows
                    tiles, rows = [], []
        if tiles:
            yield np.stack(tiles), rows


def _mask_fraction(mask: np.ndarray, scale: float, x: float, y: float, step: float) -> float:
    x0, y0 = int(x * scale), int(y * scale)
    x1, y1 = max(x0 + 1, int((x + step) * scale)), max(y0 + 1, int((y + step) * scale))
    window = mask[y0:y1, x0:x1]
    return round(float(window.mean()), 4) if window.size else 0.0


def _row(rel: str, x: int, y: int, level: int, mpp: float, fraction: float) -> dict:
    slide_id = image_id_of(rel)
    return {"source": rel, "image_id": slide_id, "slide_id": slide_id, "x": x, "y": y, "level": level,
            "mpp": round(mpp, 4), "tissue_fraction": fraction}
