"""Tiling: one source (an image, a field of channel files, an HDF5 patch file, a slide) into its part.

A source is read, checked (channels first, scaled to a storable dtype, at least one tile
big), cut on a grid and written as a part (``parts.py``) with one manifest row per tile.
Every problem is a failed ``PartResult`` naming the file rather than an exception, so a
parallel job over thousands of files is not taken down by one bad image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sslray.data.foreground import foreground_mask
from sslray.data.intensity import IntensityError, Scaling, to_storable
from sslray.data.parts import PartResult, PartWriter, discard_part
from sslray.data.readers import (
    ImageReadError,
    hdf5_channel_names,
    image_id_of,
    iter_hdf5_images,
    read_channel_files,
    read_channel_folder,
    read_image,
)
from sslray.data.sources import IngestError, SourceImage
from sslray.data.wsi import tile_slide

if TYPE_CHECKING:
    from sslray.data.ingest_config import IngestConfig


def tile_source(source: SourceImage, cfg: IngestConfig, staging: str, scaling: Scaling | None = None) -> PartResult:
    """Tile one source into its part. A bad file gives a failed result naming it, not an exception,
    so one corrupt image among thousands does not take a parallel job down."""
    part = PartWriter(staging, source.rel)
    try:
        for tiles, rows, channels in source_tiles(source, cfg, scaling or cfg.scaling):
            part.add(tiles, rows, channels)
        if not part.pieces:
            raise ImageReadError(f"{source.path}: no tile has at least {cfg.min_tissue:.0%} tissue (empty slide?)")
    except (ImageReadError, IngestError, IntensityError) as err:
        discard_part(staging, source.rel)
        message, path = str(err), str(source.path)
        return PartResult(source.rel, False, reason=message if message.startswith(path) else f"{path}: {message}")
    return part.finish()


def source_tiles(source: SourceImage, cfg: IngestConfig, scaling: Scaling
                  ) -> Iterator[tuple[np.ndarray, list[dict], list[str]]]:
    """Batches of (tiles, manifest rows, channel names) from one source; raises on a bad file."""
    reader = cfg.reader_for(source.path)
    if reader == "slide":
        for tiles, rows in tile_slide(source.path, cfg.slide_tiling, source.rel):
            yield tiles, [r | _labels(source) for r in rows], ["R", "G", "B"]
        return
    if reader == "hdf5":
        yield from _hdf5_tiles(source, cfg, scaling)
        return
    image, names = _read_checked(source, cfg, scaling)
    names = names or _channel_names(cfg, image)
    tiles, rows = tile_image(image, source, cfg.tile_size, _foreground_index(cfg, names, source.path), cfg.stride)
    yield tiles, rows, names


def _foreground_index(cfg: IngestConfig, names: list[str], path: Path) -> int | None:
    if cfg.foreground_channel is None:
        return None
    if cfg.foreground_channel not in names:
        raise IngestError(f"{path}: foreground_channel {cfg.foreground_channel!r} is not one of its channels {names}")
    return names.index(cfg.foreground_channel)


def _hdf5_tiles(source: SourceImage, cfg: IngestConfig, scaling: Scaling) -> Iterator[tuple[np.ndarray, list[dict], list[str]]]:
    """Every image of an HDF5 patch file is one field, ``image_id`` = ``<file>#<index>``."""
    names = hdf5_channel_names(source.path)
    for index, image in iter_hdf5_images(source.path, max_pixels=cfg.max_pixels):
        image = to_storable(image, source.path, scaling)
        if min(image.shape[1:]) < cfg.tile_size:
            raise ImageReadError(f"{source.path}[{index}]: image {image.shape[1:]} is smaller than the tile size")
        field = replace(source, rel=f"{source.rel}#{index}")
        channels = names or _channel_names(cfg, image)
        tiles, rows = tile_image(image, field, cfg.tile_size, _foreground_index(cfg, channels, source.path),
                                 cfg.stride)
        for row in rows:
            row["source"] = source.rel
        yield tiles, rows, channels


def _labels(source: SourceImage) -> dict:
    return {"label": source.label, "group": source.group, "split": source.split, **source.extra}


def load_source(source: SourceImage, cfg: IngestConfig) -> tuple[np.ndarray, list[str] | None]:
    """(C, H, W) pixels of one field, and its channel names when the layout provides them."""
    if cfg.layout == "channel-folders":
        image, keys = read_channel_folder(source.path, cfg.channels, cfg.max_pixels)
    elif source.channel_files is not None:
        image, keys = read_channel_files(source.channel_files, cfg.channels, f"{source.path}/{Path(source.rel).name}",
                                         cfg.max_pixels)
    else:
        return read_image(source.path, cfg.max_pixels), None
    return image, [(cfg.channel_names or {}).get(k, k) for k in keys]


def _read_checked(source: SourceImage, cfg: IngestConfig, scaling: Scaling) -> tuple[np.ndarray, list[str] | None]:
    image, names = load_source(source, cfg)
    image = to_storable(image, source.path, scaling)
    h, w = image.shape[1:]
    if min(h, w) < cfg.tile_size:
        raise ImageReadError(f"{source.path}: image {w}x{h} is smaller than the tile size {cfg.tile_size}")
    return image, names


def tile_image(image: np.ndarray, source: SourceImage, tile_size: int, foreground_channel: int | None = None,
               stride: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Cut tiles on a grid from the top-left, one every ``stride`` pixels (default ``tile_size``:
    side by side); a smaller stride overlaps them, as field tiling at inference does.

    The ragged border is dropped: tiles start at 0, stride, 2 * stride, ... while a whole tile
    still fits, so the right and bottom strips that no further tile covers (fewer than
    ``stride`` pixels past the last tile's end) are never stored.

    ``tissue_fraction`` is the share of foreground pixels (Otsu over the whole image, on one
    channel such as DAPI when given, else on the channel mean), so training can keep tiles
    that contain cells.
    """
    _, h, w = image.shape
    plane = image if foreground_channel is None else image[foreground_channel : foreground_channel + 1]
    foreground = foreground_mask(plane)  # once per image: Otsu per tile would judge each tile alone
    tiles, rows = [], []
    image_id = image_id_of(source.rel)
    step = stride or tile_size
    for y in range(0, h - tile_size + 1, step):
        for x in range(0, w - tile_size + 1, step):
            tile = image[:, y : y + tile_size, x : x + tile_size]
            tiles.append(tile)
            rows.append(
                {
                    "source": source.rel,
                    "image_id": image_id,
                    "x": x,
                    "y": y,
                    "level": 0,
                    "mpp": None,
                    "tissue_fraction": round(float(foreground[y : y + tile_size, x : x + tile_size].mean()), 4),
                    **_labels(source),
                }
            )
    return np.ascontiguousarray(np.stack(tiles)), rows


def _channel_names(cfg: IngestConfig, image: np.ndarray) -> list[str]:
    c = image.shape[0]
    if cfg.channels:
        if len(cfg.channels) != c:
            raise IngestError(f"{cfg.src}: {len(cfg.channels)} channel names given but images have {c} channels")
        return list(cfg.channels)
    return {1: ["gray"], 3: ["R", "G", "B"]}.get(c, [f"ch{i}" for i in range(c)])

