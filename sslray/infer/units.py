"""Units of work for embedding straight from images: one per slide, image file or field.

Each unit is read inside a Ray Data task with ingest's own readers (``source_tiles``: tissue
mask, target mpp, tile size and stride for slides; channel layouts and foreground for fields),
so embedding a slide gives the tiles ``sslray ingest`` would have stored, without the store.
A unit that fails to read is recorded with its reason (``partitions.record_count``), never
raised: one corrupt slide among thousands must not stop the others. No Ray import.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sslray import storage
from sslray.data.ingest_config import IngestConfig
from sslray.data.intensity import IntensityError
from sslray.data.readers import ImageReadError
from sslray.data.sources import IngestError, SourceImage
from sslray.data.tiling import source_tiles
from sslray.infer.collect import INDEX, UNIT
from sslray.infer.partitions import UnitCount, record_count
from sslray.infer.remote import fetched

INTS = ("x", "y", "level")
FLOATS = ("mpp", "tissue_fraction")
STRINGS = ("source", "image_id", "slide_id", "label", "group", "split")


@dataclass(frozen=True)
class ChannelPlan:
    """Which channels the encoder is fed: by name when the checkpoint names them, else by count."""

    names: tuple[str, ...] | None
    count: int | None  # None: any number (a channel-agnostic encoder)


def row_schema(sources: list[SourceImage], slides: bool) -> pa.Schema:
    """The manifest columns rows of these sources carry, typed once so every partition agrees."""
    types: dict[str, pa.DataType] = {"source": pa.string(), "image_id": pa.string()}
    if slides:
        types["slide_id"] = pa.string()
    types.update({c: pa.int64() for c in INTS} | {c: pa.float64() for c in FLOATS})
    for column in ("label", "group", "split"):
        if any(getattr(s, column) is not None for s in sources):
            types[column] = pa.string()
    for key in dict.fromkeys(k for s in sources for k in s.extra):
        values = [s.extra[key] for s in sources if s.extra.get(key) is not None]
        numeric = values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        types[key] = pa.float64() if numeric else pa.string()
    return pa.schema(list(types.items()))


def read_unit(unit: int, source: SourceImage, tiling: IngestConfig, schema: pa.Schema, channels: ChannelPlan,
              staging: str, base: str | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Batches of one source's tiles with their rows, then its count (or its failure) recorded.
    ``base``: the sources are on object storage under this URL (fetched one at a time)."""
    n, fed = 0, ()
    name = str(source.path) if base is None else storage.join(base, source.rel)
    local: SourceImage | None = None
    try:
        with fetched(source, base) as local:
            for tiles, rows, names in source_tiles(local, tiling, tiling.scaling):
                tiles, fed = _fed_channels(tiles, names, channels, source)
                yield _batch(unit, n, tiles, rows, schema)
                n += len(tiles)
    except Exception as err:  # readers raise anything on a corrupt file (tifffile: IndexError)
        record_count(staging, unit, UnitCount(n, _reason(err, name, local)))
        return
    record_count(staging, unit, UnitCount(n, channels=fed))


def _reason(err: Exception, name: str, local: SourceImage | None) -> str:
    """Why a source failed, named by its path or URL (never by a temporary copy's path)."""
    known = isinstance(err, ImageReadError | IngestError | IntensityError)
    message = str(err) if known else f"cannot be read ({type(err).__name__}: {err})"
    if local is not None:
        message = message.replace(str(local.path), name)
    return message if message.startswith(name) else f"{name}: {message}"


def _fed_channels(tiles: np.ndarray, names: list[str], plan: ChannelPlan, source: SourceImage
                  ) -> tuple[np.ndarray, tuple[str, ...]]:
    """The tiles' channels the encoder takes (picked by name when it names them), and their names."""
    if plan.names and set(plan.names) <= set(names) and list(plan.names) != list(names):
        return np.ascontiguousarray(tiles[:, [names.index(n) for n in plan.names]]), plan.names
    if plan.count is not None and len(names) != plan.count:
        wanted = f" ({list(plan.names)})" if plan.names else ""
        raise IngestError(f"{source.path}: has {len(names)} channels {names} but the checkpoint expects "
                          f"{plan.count}{wanted}; choose them with channels=[...]")
    return tiles, tuple(names)


def _batch(unit: int, start: int, tiles: np.ndarray, rows: list[dict], schema: pa.Schema) -> dict[str, np.ndarray]:
    batch: dict[str, np.ndarray] = {"image": tiles}
    for name, kind in zip(schema.names, schema.types, strict=True):
        values = [row.get(name) for row in rows]
        if pa.types.is_integer(kind):
            batch[name] = np.asarray(values, np.int64)
        elif pa.types.is_floating(kind):
            batch[name] = np.asarray([None if v is None else float(v) for v in values], dtype=object)  # None: null
        else:
            batch[name] = np.asarray([None if v is None else str(v) for v in values], dtype=object)
    batch[UNIT] = np.full(len(tiles), unit, np.int64)
    batch[INDEX] = np.arange(start, start + len(tiles), dtype=np.int64)
    return batch
