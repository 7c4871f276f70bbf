"""Ingest a folder of images, or one image, slide or HDF5 file, into a tile store.

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

This module is the run: the plan that makes a rerun a resume, the intensity calibration and
the fan-out of tiling over Ray Data. The settings are ``ingest_config.py``, which files are
sources ``sources.py``, one source into a part ``tiling.py``, the parts into the store
``assembly.py``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np

from sslray import storage
from sslray.artifacts.tile_store import TileStore
from sslray.config import to_dict
from sslray.credentials import redact_url
from sslray.data.assembly import assemble
from sslray.data.ingest_config import IngestConfig
from sslray.data.intensity import IntensityError, Scaling, calibrate, sample_for_calibration
from sslray.data.parts import INGEST_DIR, PartResult, PlanMismatch, check_plan, load_part
from sslray.data.readers import IMAGE_SUFFIXES, ImageReadError, iter_hdf5_images
from sslray.data.sources import IngestError, IngestReport, SourceImage, discover_sources, fail
from sslray.data.tiling import load_source, tile_source
from sslray.stage import input_name, tracked_run

__all__ = ["IngestConfig", "IngestError", "IngestReport", "SourceImage", "discover_sources", "ingest_folder",
           "tile_source"]

log = logging.getLogger(__name__)


def ingest_folder(cfg: IngestConfig) -> TileStore:
    """Read, tile and store every image under ``cfg.src`` (or that one file); returns the published store.

    Sources are tiled into parts in parallel (a Ray Data job, one task per file), then
    assembled in source order. Inside a pipeline (the quickstart) the ingest is a nested MLflow
    run; on its own it has no tracking settings and logs nothing. Rerunning an interrupted ingest with the same settings
    redoes only the sources that have no finished part.
    """
    check_source_and_dest(cfg.src, cfg.out)
    report = IngestReport()
    sources = discover_sources(cfg, report)
    if not sources:
        raise IngestError(f"{cfg.src}: no usable images found (looked for {sorted(IMAGE_SUFFIXES)})")
    with tracked_run(None, None, stage="ingest", input=input_name(cfg.src), config=to_dict(cfg),
                     tags={"sslray.store": redact_url(cfg.out)}) as run:
        staging = _begin(cfg, sources)
        scaling = _scaling(sources, cfg, staging)
        parts = _tile_all(sources, cfg, staging, scaling, report)
        store = assemble(sources, parts, cfg, staging, scaling, report)
        run.log_metrics({"n_sources": len(sources), "n_tiles": len(store), "n_skipped": len(report.skipped)})
    return store


def check_source_and_dest(src: str, dest: str) -> None:
    """DEST inside SRC would ingest the store into itself on a rerun; SRC inside DEST would put
    the sources where the store goes. Both are refused before anything is read or written."""
    if storage.is_remote(dest):
        return
    src_path, dest_path = (os.path.realpath(storage.local_path(p)) for p in (src, dest))
    what = "source file" if os.path.isfile(src_path) else "source folder"  # a store next to a file SRC is fine
    if src_path == dest_path:
        raise IngestError(f"the destination {dest} is the {what} {src}; write the store somewhere else")
    if dest_path.startswith(src_path + os.sep):
        raise IngestError(f"the destination {dest} is inside the source folder {src}; write the store outside it")
    if src_path.startswith(dest_path + os.sep):
        raise IngestError(f"the {what} {src} is inside the destination {dest}; choose another destination")


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
    if cfg.stride is None:
        del settings["stride"]  # the default grid: an ingest interrupted before stride existed still resumes
    plan = {**settings, "sources": [[s.rel, s.label, s.group, s.split] for s in sources]}
    try:
        staging = storage.begin_resumable_output(cfg.out, cfg.overwrite, what="tile store", kind="tile_store")
        check_plan(staging, plan)
    except FileExistsError as err:
        raise IngestError(str(err)) from None
    except PlanMismatch as err:
        raise IngestError(f"{cfg.out}: {err}; rerun with the same settings to resume it, "
                          "or pass --overwrite to start over") from None
    return staging


_NOT_IN_PLAN = {"out", "overwrite", "on_error", "workers"}  # settings that do not change any tile


def _tile_all(sources: list[SourceImage], cfg: IngestConfig, staging: str, scaling: Scaling,
              report: IngestReport) -> dict[str, PartResult]:
    parts = {s.rel: part for s in sources if (part := load_part(staging, s.rel)) is not None}
    if parts:
        log.info("resuming the ingest into %s: %d of %d sources were tiled before", cfg.out, len(parts), len(sources))
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
