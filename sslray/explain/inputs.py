"""The images to explain and their tiles: from a tile store, or read straight from slides and fields.

Either way an image is its tiles (as stored: raw pixels, channels first), their manifest
positions and the image pixels one tile covers (``footprint``: the tile size for fields; for
slides ``tile_size * mpp / level0_mpp``, the level-0 resolution read from the slide file, or,
when a stored slide's file is gone, ``tiling.mpp_override``, or else the grid step, which is
the footprint when tiles lie side by side). Files are discovered and tiled with ingest's own
machinery (``discover_sources``, ``source_tiles``), so an explained tile is the tile embedding
sees. Unknown image ids are an error naming them and listing what the input holds. No Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sslray import storage
from sslray.artifacts.checkpoint import CheckpointMeta
from sslray.artifacts.selection import Selection
from sslray.artifacts.store_format import TILES, open_zarr_group
from sslray.artifacts.tile_store import TileStore
from sslray.data.ingest_config import IngestConfig
from sslray.data.readers import image_id_of
from sslray.data.sources import IngestError, IngestReport, SourceImage, discover_sources
from sslray.data.tiling import source_tiles
from sslray.data.wsi import base_mpp
from sslray.explain.config import ExplainConfig
from sslray.explain.stitch import grid_step, slide_footprint

log = logging.getLogger(__name__)


@dataclass
class ImageTiles:
    """One image's first ``max_tiles`` tiles, where they lie and what one covers."""

    image_id: str
    tiles: np.ndarray  # (N, C, T, T), as stored
    xs: np.ndarray
    ys: np.ndarray
    footprint: float  # image pixels (slides: level-0 pixels) one tile covers
    channels: list[str]
    slide: Path | None = None  # the slide file, when there is one to read a tissue mask from


def fed_channels(names: list[str], meta: CheckpointMeta, where: str) -> list[str]:
    """The channels the encoder takes, by name when the checkpoint names them (as embedding picks them)."""
    if meta.per_channel:
        return list(names)
    if meta.channels and set(meta.channels) <= set(names):
        return list(meta.channels)
    if len(names) != meta.in_chans:
        raise ValueError(f"{where} has {len(names)} channels {names} but the checkpoint expects {meta.in_chans} "
                         f"({meta.channels or 'unnamed'})")
    return list(names)


def pick_ids(available: list[str], wanted: list[str], n_images: int, where: str) -> list[str]:
    """``wanted`` (each checked to be in ``available``), or the first ``n_images`` of ``available``."""
    missing = [w for w in wanted if w not in available]
    if missing:
        shown = ", ".join(available[:10]) + (f", ... ({len(available)} in all)" if len(available) > 10 else "")
        raise ValueError(f"image {missing[0]!r} is not in {where} (no image_id or slide_id of that name); it has: "
                         f"{shown}")
    return list(wanted) if wanted else available[:n_images]


def store_images(cfg: ExplainConfig, meta: CheckpointMeta) -> tuple[list[str], Iterator[ImageTiles]]:
    """(the image ids, their tiles one image at a time) of a tile store."""
    store = TileStore.open(cfg.store)
    manifest = store.store_manifest
    image_ids = manifest.column("image_id").to_pylist()
    ids = list(dict.fromkeys(image_ids))
    slide_ids = manifest.column("slide_id").to_pylist() if "slide_id" in manifest.column_names else []
    slide_of = dict(zip(slide_ids, image_ids))  # a slide_id names its slide's image
    chosen = pick_ids(ids, [slide_of.get(w, w) for w in cfg.images], cfg.n_images, f"tile store {cfg.store}")
    channels = fed_channels(store.info.channels, meta, f"tile store {cfg.store}")

    def read() -> Iterator[ImageTiles]:
        for image_id in chosen:
            view = store.select(Selection(where={"image_id": image_id}, channels=channels))
            rows = view.manifest_table.slice(0, cfg.max_tiles).to_pydict()
            slide = _stored_slide(store, rows)
            footprint = _footprint(rows, store.info.tile_size, slide, cfg.tiling.mpp_override)
            yield ImageTiles(image_id, view.read(0, cfg.max_tiles), np.asarray(rows["x"]), np.asarray(rows["y"]),
                             footprint, channels, slide)

    return chosen, read()


def source_images(cfg: ExplainConfig, meta: CheckpointMeta) -> tuple[list[str], Iterator[ImageTiles]]:
    """(the image ids, their tiles one image at a time) of the slides/images under ``cfg.slides``."""
    tiling = slides_tiling(cfg)
    sources = {image_id_of(s.rel): s for s in discover_sources(tiling, IngestReport())}
    if not sources:
        raise IngestError(f"{cfg.slides}: no slides or images found")
    chosen = pick_ids(list(sources), cfg.images, cfg.n_images, cfg.slides)

    def read() -> Iterator[ImageTiles]:
        for image_id in chosen:
            yield _read_source(sources[image_id], image_id, tiling, cfg, meta)

    return chosen, read()


def slides_tiling(cfg: ExplainConfig) -> IngestConfig:
    """Ingest's settings pointed at ``cfg.slides`` (a CSV lists files relative to its folder, as ingest's labels)."""
    slides = Path(cfg.slides)
    if slides.suffix.lower() == ".csv":
        return replace(cfg.tiling, src=str(slides.parent), labels=str(slides))
    return replace(cfg.tiling, src=str(slides))


def _read_source(source: SourceImage, image_id: str, tiling: IngestConfig, cfg: ExplainConfig,
                 meta: CheckpointMeta) -> ImageTiles:
    tiles, rows, names = [], [], []
    for batch, batch_rows, batch_names in source_tiles(source, tiling, tiling.scaling):
        names = batch_names
        tiles.append(batch[: cfg.max_tiles - len(rows)])
        rows += batch_rows[: cfg.max_tiles - len(rows)]
        if len(rows) >= cfg.max_tiles:
            break  # a large slide: read no further than the tiles explained
    if not rows:
        raise IngestError(f"{source.path}: no tiles to explain (no tile has {tiling.min_tissue:.0%} tissue?)")
    stacked = np.concatenate(tiles)
    channels = fed_channels(names, meta, str(source.path))
    stacked = stacked[:, [names.index(c) for c in channels]]
    columns = {key: [r.get(key) for r in rows] for key in ("x", "y", "mpp")}
    slide = source.path if tiling.reader_for(source.path) == "slide" else None
    return ImageTiles(image_id, stacked, np.asarray(columns["x"]), np.asarray(columns["y"]),
                      _footprint(columns, tiling.tile_size, slide, tiling.mpp_override), channels, slide)


def _footprint(rows: dict[str, list], tile_size: int, slide: Path | None, override: float | None) -> float:
    """Image pixels one tile covers: the tile size, or for slides the level-0 pixels of the tile's mpp."""
    mpp = next((m for m in rows.get("mpp", []) if m is not None), None)
    if mpp is None:
        return float(tile_size)
    level0 = override or (_slide_mpp(slide) if slide is not None else None)
    if level0 is not None:
        return slide_footprint(float(mpp), tile_size, level0)
    step = grid_step(np.asarray(rows["x"]), np.asarray(rows["y"]))
    log.warning("the slide's level-0 resolution is unknown (its file is not found): a tile is taken to cover the "
                "grid step, %s level-0 pixels; pass tiling.mpp_override=MPP if the tiles overlap", step)
    return float(step or tile_size)


def _slide_mpp(path: Path) -> float:
    import tiffslide

    with tiffslide.TiffSlide(str(path)) as slide:
        return base_mpp(dict(slide.properties), path, None)


def _stored_slide(store: TileStore, rows: dict[str, list]) -> Path | None:
    """The file a stored slide was ingested from, when it is still there (``ingest.source`` + the row's source)."""
    if not rows.get("mpp") or rows["mpp"][0] is None:
        return None
    src = dict(open_zarr_group(storage.join(store.url, TILES), "r").attrs).get("ingest", {}).get("source")
    if not src:
        return None
    path = Path(src) if Path(src).is_file() else Path(src) / str(rows["source"][0])
    return path if path.is_file() else None

