"""What an embedding job is made of: its units of work, its plan, its rows' schema.

Two kinds of input, one shape: a tile store (a unit per shard, its tile count known up front)
and images read straight from slides, files or fields (a unit per source, counted by its read
task). Each job knows the plan that identifies it (``partitions.check_plan`` refuses to mix
two), the embedded blocks of the units still to do (``stream.py``), and what the published
table's ``_SUCCESS`` says about it. No Ray import: ``stream`` is imported when blocks are asked for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from sslray import storage
from sslray.artifacts.checkpoint import ENCODER_FILE, CheckpointMeta
from sslray.artifacts.embeddings import CHECKPOINT, carried_columns
from sslray.artifacts.tile_store import TileStore, manifest_sha256, split_at_shards
from sslray.artifacts.vector_table import EMBEDDING
from sslray.config import to_dict
from sslray.credentials import redact
from sslray.data.ingest_config import IngestConfig
from sslray.data.sources import IngestError, IngestReport, SourceImage, discover_sources
from sslray.infer import partitions
from sslray.infer.remote import remote_sources
from sslray.infer.units import ChannelPlan, row_schema

if TYPE_CHECKING:
    from sslray.infer.embed import EmbedConfig
    from sslray.infer.stream import Actors


def output_schema(columns: pa.Schema, dim: int) -> pa.Schema:
    """The embeddings table's schema: the carried columns, ``embedding`` and ``checkpoint``."""
    return columns.append(pa.field(EMBEDDING, pa.list_(pa.float32(), dim))).append(
        pa.field(CHECKPOINT, pa.dictionary(pa.int32(), pa.string())))


def _common_plan(cfg: EmbedConfig, meta: CheckpointMeta) -> dict[str, Any]:
    return {"checkpoint": redact(cfg.checkpoint), "encoder_sha256": meta.files.get(ENCODER_FILE, ""),
            "l2_normalize": cfg.l2_normalize, "empty_below": cfg.empty_below}


@dataclass
class StoreJob:
    """A tile store view: one unit per shard group of the selected rows."""

    store: TileStore
    groups: list[np.ndarray]
    plan: dict[str, Any]
    schema: pa.Schema
    channels: list[str]

    @classmethod
    def make(cls, cfg: EmbedConfig, meta: CheckpointMeta, view: TileStore) -> StoreJob:
        rows = np.arange(len(view.store_manifest)) if view.rows is None else np.asarray(view.rows)
        groups = split_at_shards(rows, view.info.shard_tiles)
        plan = {**_common_plan(cfg, meta), "store": redact(view.url), "manifest_sha256": manifest_sha256(view.url),
                "selection": to_dict(view.selection), "channels": list(view.info.channels),
                "units": [[int(g[0]), len(g)] for g in groups]}
        manifest = view.store_manifest
        columns = manifest.select(carried_columns(manifest.column_names)).schema
        schema = output_schema(columns, _dim(meta, view.info.n_channels))
        return cls(view, groups, plan, schema, list(view.info.channels))

    @property
    def n_units(self) -> int:
        return len(self.groups)

    @property
    def expected(self) -> dict[int, int]:
        return {u: len(g) for u, g in enumerate(self.groups)}

    def total_tiles(self, todo: list[int]) -> int:
        return sum(len(self.groups[u]) for u in todo)

    def unit_name(self, unit: int) -> str:
        return f"{self.store.url} shard rows {int(self.groups[unit][0])}-{int(self.groups[unit][-1])}"

    def blocks(self, todo: list[int], staging: str, actors: Actors):
        from sslray.infer.stream import store_blocks

        return store_blocks(self.store, self.groups, todo, actors)

    def input_info(self) -> dict[str, Any]:
        return {"store": self.store.url}


@dataclass
class SourceJob:
    """Images read straight from slides, files or fields: one unit per source."""

    sources: list[SourceImage]
    tiling: IngestConfig
    channels_plan: ChannelPlan
    plan: dict[str, Any]
    schema: pa.Schema
    report: IngestReport
    slides: str
    base: str | None = None  # the sources are on object storage under this URL

    @classmethod
    def make(cls, cfg: EmbedConfig, meta: CheckpointMeta) -> SourceJob:
        tiling = source_tiling(cfg)
        report, base = IngestReport(), None
        if storage.is_remote(cfg.slides):
            base, sources = remote_sources(cfg.slides)
        else:
            sources = discover_sources(tiling, report)
        if not sources:
            raise IngestError(f"{cfg.slides}: no slides or images found")
        rows = row_schema(sources, slides=any(tiling.reader_for(s.path) == "slide" for s in sources))
        channels = ChannelPlan(None, None) if meta.per_channel else ChannelPlan(
            tuple(meta.channels) if meta.channels else None, meta.in_chans)
        settings = {k: v for k, v in asdict(tiling).items() if k not in ("src", "out", "overwrite", "on_error", "workers")}
        plan = {**_common_plan(cfg, meta), "slides": redact(cfg.slides), "tiling": json.loads(json.dumps(settings)),
                "sources_sha256": _sources_digest(sources), "n_units": len(sources)}
        dim = _dim(meta, channels.count) if channels.count else meta.embed_dim or 0
        return cls(sources, tiling, channels, plan, output_schema(rows, dim), report, cfg.slides, base)

    @property
    def n_units(self) -> int:
        return len(self.sources)

    @property
    def expected(self) -> None:
        return None  # a source's tile count is known once it has been read

    def total_tiles(self, todo: list[int]) -> None:
        return None

    def unit_name(self, unit: int) -> str:
        source = self.sources[unit]
        return str(source.path) if self.base is None else storage.join(self.base, source.rel)

    def blocks(self, todo: list[int], staging: str, actors: Actors):
        from sslray.infer.stream import source_blocks

        row_columns = pa.schema([f for f in self.schema if f.name not in (EMBEDDING, CHECKPOINT)])
        return source_blocks(self.sources, todo, self.tiling, row_columns, self.channels_plan, staging, actors,
                             self.base)

    def input_info(self) -> dict[str, Any]:
        return {"slides": self.slides, "skipped_at_discovery": self.report.skipped}


def source_tiling(cfg: EmbedConfig) -> IngestConfig:
    """Ingest's settings pointed at ``cfg.slides``: a folder, one file, or a CSV listing files
    (``path[,label,...]``, paths relative to the CSV's folder, as ingest's labels CSV)."""
    slides = Path(cfg.slides)
    if slides.suffix.lower() == ".csv" and not storage.is_remote(cfg.slides):
        return replace(cfg.tiling, src=str(slides.parent), labels=str(slides), on_error=cfg.on_error)
    return replace(cfg.tiling, src=str(slides), on_error=cfg.on_error)


def _dim(meta: CheckpointMeta, n_channels: int) -> int:
    return int(meta.embed_dim or 0) * (n_channels if meta.per_channel else 1)


def _sources_digest(sources: list[SourceImage]) -> str:
    listing = json.dumps([[s.rel, s.label, s.group, s.split, sorted(map(str, s.extra.items()))] for s in sources])
    return hashlib.sha256(listing.encode()).hexdigest()


def committed_rows(staging: str, n_units: int, failed: dict[int, str]) -> int:
    return sum(partitions.unit_rows(staging, u) for u in range(n_units) if u not in failed)
