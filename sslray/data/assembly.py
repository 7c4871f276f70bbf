"""Assembly: the finished parts into one tile store, in source order.

Parts finish in any order, but the store's rows follow the source order, so the same
sources always give the same store. The first part fixes the store's channels and dtype;
a later source that differs is failed (or skipped and reported) by name, and its part is
discarded so a rerun reads the file again in case it was fixed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sslray import storage
from sslray.artifacts.tile_store import TileStore
from sslray.artifacts.tile_store_writer import TileStoreWriter
from sslray.data.intensity import Scaling
from sslray.data.parts import INGEST_DIR, PartResult, discard_part, read_part
from sslray.data.sources import IngestError, IngestReport, SourceImage, fail

if TYPE_CHECKING:
    from sslray.data.ingest_config import IngestConfig


def assemble(sources: list[SourceImage], parts: dict[str, PartResult], cfg: IngestConfig, staging: str,
             scaling: Scaling, report: IngestReport) -> TileStore:
    """Write the parts into the store in source order; mismatching sources fail or are skipped."""
    writer: TileStoreWriter | None = None
    for source in sources:
        part = parts.get(source.rel)
        if part is None:
            continue
        if writer is None:
            writer = TileStoreWriter(cfg.out, part.channels, np.dtype(part.dtype), cfg.tile_size, staging=staging,
                                     compression=cfg.compression)
        elif problem := _mismatch(part.channels, np.dtype(part.dtype), writer):
            discard_part(staging, source.rel)  # re-read on the next run, in case the file is fixed
            fail(cfg, report, str(source.path), f"{source.path}: {problem}", kept=len(parts) - 1)
            continue
        for tiles, rows in read_part(staging, part, cfg.tile_size):
            writer.append(tiles, rows)
        report.n_tiles += part.n_tiles
        report.n_images += 1
    if writer is None:
        raise IngestError(f"{cfg.src}: every image was skipped; see the reasons above")
    storage.remove(storage.join(staging, INGEST_DIR))
    _write_report(writer, report)
    return writer.close({"ingest": {"source": str(cfg.src), "skipped": len(report.skipped),
                                    "clip_percentiles": cfg.clip_percentiles, **scaling.as_attrs()}})


def _mismatch(channels: list[str], dtype: np.dtype, writer: TileStoreWriter) -> str | None:
    """Why a source cannot join the store begun by earlier sources, or None."""
    if len(channels) != len(writer.channels):
        return f"has {len(channels)} channels but earlier images have {len(writer.channels)}"
    if channels != writer.channels:
        return f"channels {channels} differ from earlier fields' {writer.channels}"
    if dtype != writer.dtype:
        return f"dtype {dtype} differs from earlier images ({writer.dtype})"
    return None


def _write_report(writer: TileStoreWriter, report: IngestReport) -> None:
    storage.write_json(
        storage.join(writer.staging, "ingest_report.json"),
        {"n_images": report.n_images, "n_tiles": report.n_tiles, "skipped": report.skipped,
         "linked_outside": report.linked_outside},
    )

