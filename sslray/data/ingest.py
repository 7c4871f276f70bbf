"""Ingest a folder of images into a tile store.

Two layouts: ``files`` (each image file is one field; multi-channel files keep all their
channels) and ``channel-folders`` (each folder holding image files is one field stored as one
single-channel file per marker, as MIBI/IMC exports and Cell Painting sites are; channel
names are the file names). Labels come from class sub-folders (``SRC/<label>/...``) or from a CSV with columns
``path,label[,group][,split]`` (paths relative to SRC; ``group`` is the patient/slide/field
id used for grouped splits). Every problem with a source file is reported by file name; with
``on_error="skip"`` the bad files are listed in ``ingest_report.json`` inside the store and
ingest continues. A failed ingest leaves nothing behind.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from sslray import storage
from sslray.data.foreground import foreground_fraction, otsu_threshold
from sslray.data.readers import (
    HDF5_SUFFIXES,
    IMAGE_SUFFIXES,
    ImageReadError,
    hdf5_channel_names,
    image_id_of,
    iter_hdf5_images,
    read_channel_folder,
    read_image,
)
from sslray.data.store import TileStore, TileStoreWriter
from sslray.data.wsi import SLIDE_SUFFIXES, SlideTiling, is_slide, tile_slide

log = logging.getLogger(__name__)


class IngestError(ValueError):
    """Ingest cannot proceed; the message names the file and the problem."""


@dataclass
class IngestConfig:
    src: str = ""
    dest: str = ""
    tile_size: int = 224
    labels: str | None = None  # CSV path,label[,group][,split]; default: sub-folder names
    layout: Literal["files", "channel-folders"] = "files"
    on_error: Literal["stop", "skip"] = "stop"
    overwrite: bool = False
    channels: list[str] | None = None  # names (files), or the marker files to keep, in order (channel-folders)
    mpp: float | None = None  # whole slides: target microns per pixel (also makes TIFFs count as slides)
    magnification: float | None = None  # whole slides: or a target objective power
    mpp_override: float | None = None  # whole slides: level-0 mpp for slides without metadata
    min_tissue: float = 0.25  # whole slides: keep tiles with at least this tissue fraction
    float_max: list[float] | None = None  # float images: value mapped to full scale, one or per channel
    log1p: bool = False  # float images: log1p before scaling (skewed ion counts, e.g. IMC)

    def __post_init__(self) -> None:
        if self.tile_size < 8:
            raise ValueError(f"tile_size must be >= 8 pixels, got {self.tile_size}")
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"min_tissue must be in [0, 1], got {self.min_tissue}")
        if self.float_max is not None and (not self.float_max or min(self.float_max) <= 0):
            raise ValueError(f"float_max must list positive values, got {self.float_max}")

    @property
    def slide_tiling(self) -> SlideTiling:
        return SlideTiling(self.tile_size, self.mpp, self.magnification, self.mpp_override, self.min_tissue)

    def treats_as_slide(self, path: Path) -> bool:
        return is_slide(path) or (
            (self.mpp is not None or self.magnification is not None) and path.suffix.lower() in {".tif", ".tiff"}
        )


@dataclass
class SourceImage:
    path: Path
    rel: str
    label: str | None = None
    group: str | None = None
    split: str | None = None


@dataclass
class IngestReport:
    n_images: int = 0
    n_tiles: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)


def ingest_folder(cfg: IngestConfig) -> TileStore:
    """Read, tile and store every image under ``cfg.src``; returns the published store."""
    report = IngestReport()
    sources = discover_sources(cfg, report)
    if not sources:
        raise IngestError(f"{cfg.src}: no usable images found (looked for {sorted(IMAGE_SUFFIXES)})")
    writer: TileStoreWriter | None = None
    try:
        for source in sources:
            produced = 0
            for tiles, rows, channels in _source_tiles(source, cfg, report):
                if writer is None:
                    writer = TileStoreWriter(cfg.dest, channels, tiles.dtype, cfg.tile_size, cfg.overwrite)
                elif produced == 0 and (problem := _mismatch(channels, tiles.dtype, writer)):
                    _fail(cfg, report, str(source.path), f"{source.path}: {problem}")
                    break
                writer.append(tiles, rows)
                produced += len(tiles)
            report.n_tiles += produced
            report.n_images += bool(produced)
        if writer is None:
            raise IngestError(f"{cfg.src}: every image was skipped; see the reasons above")
        _write_report(writer, report)
        return writer.close({"ingest": {"source": str(cfg.src), "skipped": len(report.skipped),
                                        "float_max": cfg.float_max, "log1p": cfg.log1p}})
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def discover_sources(cfg: IngestConfig, report: IngestReport) -> list[SourceImage]:
    root = Path(cfg.src)
    if not root.is_dir():
        raise IngestError(f"source folder {root} does not exist or is not a folder")
    if cfg.labels:
        return _sources_from_csv(root, Path(cfg.labels), cfg, report)
    suffixes = IMAGE_SUFFIXES | SLIDE_SUFFIXES | HDF5_SUFFIXES
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if cfg.layout == "channel-folders":
        files = sorted({p.parent for p in files})  # every folder holding images is one field
    return [
        SourceImage(p, p.relative_to(root).as_posix(), label=p.parent.name if p.parent != root else None)
        for p in files
    ]


def _sources_from_csv(root: Path, csv_path: Path, cfg: IngestConfig, report: IngestReport) -> list[SourceImage]:
    if not csv_path.is_file():
        raise IngestError(f"labels file {csv_path} does not exist")
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing_cols = {"path", "label"} - set(reader.fieldnames or [])
        if missing_cols:
            raise IngestError(f"labels file {csv_path}: missing column(s) {sorted(missing_cols)}; need path,label[,group]")
        rows = list(reader)
    sources = []
    for line, row in enumerate(rows, start=2):
        path = root / row["path"]
        if not (path.is_dir() if cfg.layout == "channel-folders" else path.is_file()):
            _fail(cfg, report, str(path), f"listed in {csv_path} line {line} but does not exist")
            continue
        sources.append(
            SourceImage(path, row["path"], row["label"] or None, row.get("group") or None, row.get("split") or None)
        )
    return sources


def _mismatch(channels: list[str], dtype: np.dtype, writer: TileStoreWriter) -> str | None:
    """Why a source cannot join the store begun by earlier sources, or None."""
    if len(channels) != len(writer.channels):
        return f"has {len(channels)} channels but earlier images have {len(writer.channels)}"
    if channels != writer.channels:
        return f"channels {channels} differ from earlier fields' {writer.channels}"
    if dtype != writer.dtype:
        return f"dtype {dtype} differs from earlier images ({writer.dtype})"
    return None


def _source_tiles(source: SourceImage, cfg: IngestConfig, report: IngestReport):
    """Batches of (tiles, manifest rows, channel names) from one source; nothing if skipped."""
    if cfg.treats_as_slide(source.path):
        try:
            for tiles, rows in tile_slide(source.path, cfg.slide_tiling, source.rel):
                yield tiles, [r | _labels(source) for r in rows], ["R", "G", "B"]
        except ImageReadError as err:
            _fail(cfg, report, str(source.path), str(err))
        return
    if source.path.suffix.lower() in HDF5_SUFFIXES:
        yield from _hdf5_tiles(source, cfg, report)
        return
    loaded = _read_or_skip(source, cfg, report)
    if loaded is not None:
        image, names = loaded
        tiles, rows = tile_image(image, source, cfg.tile_size)
        yield tiles, rows, names or _channel_names(cfg, image)


def _hdf5_tiles(source: SourceImage, cfg: IngestConfig, report: IngestReport):
    """Every image of an HDF5 patch file is one field, ``image_id`` = ``<file>#<index>``."""
    try:
        names = hdf5_channel_names(source.path)
        for index, image in iter_hdf5_images(source.path):
            image = _as_storable(image, source.path, cfg)
            if min(image.shape[1:]) < cfg.tile_size:
                raise ImageReadError(f"{source.path}[{index}]: image {image.shape[1:]} is smaller than the tile size")
            field = SourceImage(source.path, f"{source.rel}#{index}", source.label, source.group, source.split)
            tiles, rows = tile_image(image, field, cfg.tile_size)
            for row in rows:
                row["source"] = source.rel
            yield tiles, rows, names or _channel_names(cfg, image)
    except ImageReadError as err:
        _fail(cfg, report, str(source.path), str(err))


def _labels(source: SourceImage) -> dict:
    return {"label": source.label, "group": source.group, "split": source.split}


def load_source(source: SourceImage, cfg: IngestConfig) -> tuple[np.ndarray, list[str] | None]:
    """(C, H, W) pixels of one field, and its channel names when the layout provides them."""
    if cfg.layout == "channel-folders":
        return read_channel_folder(source.path, cfg.channels)
    return read_image(source.path), None


def _read_or_skip(source, cfg, report) -> tuple[np.ndarray, list[str] | None] | None:
    try:
        image, names = load_source(source, cfg)
        image = _as_storable(image, source.path, cfg)
        h, w = image.shape[1:]
        if min(h, w) < cfg.tile_size:
            raise ImageReadError(f"{source.path}: image {w}x{h} is smaller than the tile size {cfg.tile_size}")
        return image, names
    except ImageReadError as err:
        _fail(cfg, report, str(source.path), str(err))
        return None


def _as_storable(image: np.ndarray, path: Path, cfg: IngestConfig) -> np.ndarray:
    """Integer images pass through; float images become uint16 on a scale the user chose.

    Floats are never rescaled per image (that would make intensities incomparable across
    images): values in [0, 1] map to the full uint16 range; anything else needs
    ``float_max`` (after ``log1p`` when set), recorded in the store's attributes.
    """
    if image.dtype.kind != "f":
        return image
    if cfg.log1p:
        image = np.log1p(np.clip(image, 0, None))
    if cfg.float_max is not None:
        top = np.asarray(cfg.float_max, dtype=np.float32)
        if top.size not in (1, image.shape[0]):
            raise ImageReadError(f"{path}: {top.size} float_max values for {image.shape[0]} channels")
        image = np.clip(image / top.reshape(-1, 1, 1), 0, 1)
    elif image.min() < 0 or image.max() > 1:
        raise ImageReadError(
            f"{path}: float image with values in [{image.min():.3g}, {image.max():.3g}]; pass --float-max "
            "(the value to map to full scale: one, or one per channel) and optionally --log1p"
        )
    return np.round(image * 65535).astype(np.uint16)


def _fail(cfg: IngestConfig, report: IngestReport, path: str, reason: str) -> None:
    message = reason if reason.startswith(path) else f"{path}: {reason}"
    if cfg.on_error == "stop":
        raise IngestError(message + " (use --on-error skip to skip bad files)")
    log.warning("skipping %s", message)
    report.skipped.append({"path": path, "reason": message})


def tile_image(image: np.ndarray, source: SourceImage, tile_size: int) -> tuple[np.ndarray, list[dict]]:
    """Cut non-overlapping tiles on a grid from the top-left; the ragged border is dropped."""
    _, h, w = image.shape
    threshold, bright_background = otsu_threshold(image)
    tiles, rows = [], []
    image_id = image_id_of(source.rel)
    for y in range(0, h - tile_size + 1, tile_size):
        for x in range(0, w - tile_size + 1, tile_size):
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
                    "tissue_fraction": foreground_fraction(tile, threshold, bright_background),
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


def _write_report(writer: TileStoreWriter, report: IngestReport) -> None:
    storage.write_json(
        storage.join(writer.staging, "ingest_report.json"),
        {"n_images": report.n_images, "n_tiles": report.n_tiles, "skipped": report.skipped},
    )
