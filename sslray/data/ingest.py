"""Ingest a folder of images into a tile store.

Three layouts: ``files`` (each image file is one field; multi-channel files keep all their
channels), ``channel-folders`` (each folder holding image files is one field stored as one
single-channel file per marker, as MIBI/IMC exports are; channel names are the file names)
and ``channel-files`` (single-channel files side by side, grouped into fields by a regex
with a ``channel`` group, as Cell Painting sites are; its other named groups, such as
``well`` or ``site``, become manifest columns). Labels come from class sub-folders
(``SRC/<label>/...``) or from a CSV with columns ``path,label[,group][,split]`` (paths
relative to SRC; ``group`` is the patient/slide/field id used for grouped splits). Every
problem with a source file is reported by file name; with ``on_error="skip"`` the bad files
are listed in ``ingest_report.json`` inside the store and ingest continues. Nothing is
visible at the destination until the store is complete; an interrupted or failed ingest
keeps its finished parts, and rerunning it resumes from them.

This module is the run: the config, the plan that makes a rerun a resume, the intensity
calibration and the fan-out of tiling over Ray Data. Which files are sources is
``sources.py``, one source into a part is ``tiling.py``, the parts into the store is
``assembly.py``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sslray import storage
from sslray.data.assembly import assemble
from sslray.data.intensity import IntensityError, Scaling, calibrate, sample_for_calibration
from sslray.data.parts import INGEST_DIR, PartResult, PlanMismatch, check_plan, load_part
from sslray.data.readers import HDF5_SUFFIXES, IMAGE_SUFFIXES, MAX_PIXELS, ImageReadError, iter_hdf5_images
from sslray.data.sources import IngestError, IngestReport, SourceImage, discover_sources, fail
from sslray.data.store import COMPRESSION, TileStore
from sslray.data.tiling import load_source, tile_source
from sslray.data.wsi import SlideTiling, is_slide

__all__ = ["IngestConfig", "IngestError", "IngestReport", "SourceImage", "discover_sources", "ingest_folder",
           "tile_source"]

log = logging.getLogger(__name__)


@dataclass
class IngestConfig:
    src: str = ""
    dest: str = ""
    tile_size: int = 224
    labels: str | None = None  # CSV path,label[,group][,split]; default: sub-folder names
    layout: Literal["files", "channel-folders", "channel-files"] = "files"
    channel_pattern: str | None = None  # channel-files: regex on file names with a (?P<channel>...) group
    channel_names: dict[str, str] | None = None  # channel key (file name or pattern group) -> channel name
    format: Literal["auto", "image", "slide", "hdf5"] = "auto"  # the reader; auto: from the file name
    on_error: Literal["stop", "skip"] = "stop"
    overwrite: bool = False
    channels: list[str] | None = None  # names (files), or the channel keys to keep, in order (channel layouts)
    mpp: float | None = None  # whole slides: target microns per pixel (also makes TIFFs count as slides)
    magnification: float | None = None  # whole slides: or a target objective power
    mpp_override: float | None = None  # whole slides: level-0 mpp for slides without metadata
    min_tissue: float = 0.25  # whole slides: keep tiles with at least this tissue fraction
    foreground_channel: str | None = None  # tissue_fraction from this channel (e.g. DAPI); default: channel mean
    float_max: list[float] | None = None  # float images: value mapped to full scale, one or per channel
    log1p: bool = False  # float images: log1p before scaling (skewed ion counts, e.g. IMC)
    clip_percentiles: list[float] | None = None  # [low, high]: per-channel dataset percentiles mapped to 0 and max
    compression: str = "lz4"  # Blosc codec of the store: lz4 (fast to read) or zstd (smaller)
    magnification_groups: bool = False  # BreakHis-style: magnification + field_id from the path
    workers: int | None = None  # parallel tiling tasks (Ray Data); None: one per CPU, 0: in this process
    max_pixels: int = MAX_PIXELS  # whole-image readers refuse larger images (decompression bombs); not slides

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be 0 (in this process, no Ray) or a positive number of parallel "
                             f"tiling tasks, got {self.workers}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive number of pixels, got {self.max_pixels}")
        if self.tile_size < 8:
            raise ValueError(f"tile_size must be >= 8 pixels, got {self.tile_size}")
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"min_tissue must be in [0, 1], got {self.min_tissue}")
        if self.float_max is not None and (not self.float_max or min(self.float_max) <= 0):
            raise ValueError(f"float_max must list positive values, got {self.float_max}")
        if self.layout == "channel-files":
            if not self.channel_pattern or "(?P<channel>" not in self.channel_pattern:
                raise ValueError("layout channel-files needs channel_pattern, a regex with a (?P<channel>...) group "
                                 r"(e.g. '-ch(?P<channel>\d+)' for JUMP names r01c01f01p01-ch1sk1fk1fl1.tiff)")
            try:
                re.compile(self.channel_pattern)
            except re.error as err:
                raise ValueError(f"channel_pattern {self.channel_pattern!r} is not a valid regex: {err}") from None
        if self.format not in ("auto", "image", "slide", "hdf5"):
            raise ValueError(f"format must be auto, image, slide or hdf5, got {self.format!r}")
        if self.compression not in COMPRESSION:
            raise ValueError(f"compression must be one of {sorted(COMPRESSION)}, got {self.compression!r}")
        clip = self.clip_percentiles
        if clip is not None and not (len(clip) == 2 and 0 <= clip[0] < clip[1] <= 100):
            raise ValueError(f"clip_percentiles must be two values 0 <= low < high <= 100, got {self.clip_percentiles}")

    @property
    def scaling(self) -> Scaling:
        """The scaling the user asked for, before any percentile calibration."""
        return Scaling(tuple(self.float_max) if self.float_max else None, self.log1p)

    @property
    def slide_tiling(self) -> SlideTiling:
        return SlideTiling(self.tile_size, self.mpp, self.magnification, self.mpp_override, self.min_tissue)

    def reader_for(self, path: Path) -> str:
        """``slide``, ``hdf5`` or ``image``: the ``format`` asked for, or guessed from the file name
        (a plain TIFF counts as a slide when a target resolution is given)."""
        if self.format != "auto":
            return self.format
        suffix = path.suffix.lower()
        if is_slide(path) or ((self.mpp or self.magnification) and suffix in {".tif", ".tiff"}):
            return "slide"
        return "hdf5" if suffix in HDF5_SUFFIXES else "image"


def ingest_folder(cfg: IngestConfig) -> TileStore:
    """Read, tile and store every image under ``cfg.src``; returns the published store.

    Sources are tiled into parts in parallel (a Ray Data job, one task per file), then
    assembled in source order. Rerunning an interrupted ingest with the same settings
    redoes only the sources that have no finished part.
    """
    check_source_and_dest(cfg.src, cfg.dest)
    report = IngestReport()
    sources = discover_sources(cfg, report)
    if not sources:
        raise IngestError(f"{cfg.src}: no usable images found (looked for {sorted(IMAGE_SUFFIXES)})")
    staging = _begin(cfg, sources)
    scaling = _scaling(sources, cfg, staging)
    parts = _tile_all(sources, cfg, staging, scaling, report)
    return assemble(sources, parts, cfg, staging, scaling, report)


def check_source_and_dest(src: str, dest: str) -> None:
    """DEST inside SRC would ingest the store into itself on a rerun; SRC inside DEST would put
    the sources where the store goes. Both are refused before anything is read or written."""
    if storage.is_remote(dest):
        return
    src_path, dest_path = (os.path.realpath(storage.local_path(p)) for p in (src, dest))
    if src_path == dest_path:
        raise IngestError(f"the destination {dest} is the source folder {src}; write the store somewhere else")
    if dest_path.startswith(src_path + os.sep):
        raise IngestError(f"the destination {dest} is inside the source folder {src}; write the store outside it")
    if src_path.startswith(dest_path + os.sep):
        raise IngestError(f"the source folder {src} is inside the destination {dest}; choose another destination")


def _scaling(sources: list[SourceImage], cfg: IngestConfig, staging: str) -> Scaling:
    """The user's scaling, plus dataset percentiles when clipping is asked for (kept for a resume)."""
    if cfg.clip_percentiles is None:
        return cfg.scaling
    url = storage.join(staging, INGEST_DIR, "scaling.json")
    if storage.exists(url):
        saved = storage.read_json(url)
        return Scaling(cfg.scaling.float_max, cfg.log1p, tuple(saved["low"]), tuple(saved["high"]))
    picks = [sources[i] for i in sample_for_calibration(len(sources))]
    try:
        low, high = calibrate(_calibration_images(picks, cfg), tuple(cfg.clip_percentiles), cfg.log1p)
    except IntensityError as err:
        raise IngestError(f"{cfg.src}: {err}") from None
    log.info("clipping channels to percentiles %s of %d images: low %s, high %s", cfg.clip_percentiles,
             len(picks), [round(v, 4) for v in low], [round(v, 4) for v in high])
    storage.write_json(url, {"low": list(low), "high": list(high)})
    return Scaling(cfg.scaling.float_max, cfg.log1p, low, high)


def _calibration_images(picks: list[SourceImage], cfg: IngestConfig) -> Iterator[np.ndarray]:
    for source in picks:
        if cfg.reader_for(source.path) == "slide":
            raise IngestError(f"{source.path}: clip_percentiles is for fluorescence and multiplexed images, "
                              "not whole slides")
        try:
            if cfg.reader_for(source.path) == "hdf5":
                yield next(iter_hdf5_images(source.path, max_pixels=cfg.max_pixels))[1]
            else:
                yield load_source(source, cfg)[0]
        except (ImageReadError, StopIteration):
            continue  # the tiling pass names the bad file


def _begin(cfg: IngestConfig, sources: list[SourceImage]) -> str:
    settings = {k: v for k, v in asdict(cfg).items() if k not in _NOT_IN_PLAN}
    plan = {**settings, "sources": [[s.rel, s.label, s.group, s.split] for s in sources]}
    try:
        staging = storage.begin_resumable_output(cfg.dest, cfg.overwrite, what="tile store", kind="tile_store")
        check_plan(staging, plan)
    except FileExistsError as err:
        raise IngestError(str(err)) from None
    except PlanMismatch as err:
        raise IngestError(f"{cfg.dest}: {err}; rerun with the same settings to resume it, "
                          "or pass --overwrite to start over") from None
    return staging


_NOT_IN_PLAN = {"dest", "overwrite", "on_error", "workers"}  # settings that do not change any tile


def _tile_all(sources: list[SourceImage], cfg: IngestConfig, staging: str, scaling: Scaling,
              report: IngestReport) -> dict[str, PartResult]:
    parts = {s.rel: part for s in sources if (part := load_part(staging, s.rel)) is not None}
    if parts:
        log.info("resuming the ingest into %s: %d of %d sources were tiled before", cfg.dest, len(parts), len(sources))
    by_rel = {s.rel: s for s in sources}
    todo = [s for s in sources if s.rel not in parts]
    for result in _run_tiling(todo, cfg, staging, scaling):
        if result.ok:
            parts[result.rel] = result
        else:
            fail(cfg, report, str(by_rel[result.rel].path), result.reason, kept=len(parts))
    return parts


def _run_tiling(todo: list[SourceImage], cfg: IngestConfig, staging: str, scaling: Scaling
                ) -> Iterator[PartResult]:
    if cfg.workers == 0 or len(todo) < 2:
        for source in todo:
            yield tile_source(source, cfg, staging, scaling)
        return
    import ray

    from sslray.runtime import ensure_ray

    ensure_ray()

    def run(batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        return {"result": [tile_source(todo[i], cfg, staging, scaling).to_json() for i in batch["id"]]}

    # A few sources per task: one task per small tile file spent more on scheduling than on
    # work (3000 PNG tiles: 12 files/s); ~4 tasks per CPU still balances big and small files.
    cpus = int(cfg.workers or ray.cluster_resources().get("CPU", 1))
    per_task = min(64, max(1, len(todo) // (4 * cpus)))
    compute = ray.data.TaskPoolStrategy(size=cfg.workers) if cfg.workers else None
    tiled = ray.data.range(len(todo), override_num_blocks=math.ceil(len(todo) / per_task)).map_batches(
        run, batch_size=None, compute=compute, num_cpus=1)
    for row in tiled.iter_rows():
        yield PartResult.from_json(row["result"])
