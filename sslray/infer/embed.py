"""Batch embedding: a tile store, or slides and fields read straight from files, + a checkpoint
-> the embeddings table, exactly once and resumable.

Ray Data streams tiles (from the store's shards, or read from each slide inside a task)
through a pool of ``Embedder`` actors, each holding one copy of the encoder (a GPU each when
the cluster has GPUs). The table is parquet, one partition per unit of work (a store shard, a
slide, a field), each committed atomically by the driver (``partitions.py``): a killed job,
rerun with the same command, embeds only the missing units and never writes a tile twice;
the table is published (``_SUCCESS``) only when every unit is there. Columns: the manifest's
identifying and grouping columns, ``embedding`` (a fixed-size list of float32, L2-normalised by
default) and the checkpoint it came from (docs/data_contracts.md, "Embeddings table").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import pyarrow.parquet as pq

from sslray import storage, tracking
from sslray.artifacts.checkpoint import CheckpointMeta, read_meta
from sslray.artifacts.selection import Selection
from sslray.artifacts.tile_store import TileStore
from sslray.config import to_dict
from sslray.data.ingest_config import IngestConfig
from sslray.infer import partitions
from sslray.infer.collect import UnitCollector, run_collector
from sslray.infer.encoder import Embedder, encode
from sslray.infer.jobs import SourceJob, StoreJob, committed_rows
from sslray.infer.progress import Progress
from sslray.infer.stream import Actors
from sslray.stage import input_name, publishing, tracked_run

__all__ = ["EmbedConfig", "EmbedError", "Embedder", "encode", "run_embed"]

log = logging.getLogger(__name__)


class EmbedError(ValueError):
    """Some units could not be embedded; the message names each and why. The others are kept:
    rerunning the same command redoes only the failed ones."""


@dataclass
class EmbedConfig:
    checkpoint: str = ""
    store: str = ""  # a tile store, or
    slides: str = ""  # slides/images read straight from a folder, one file or a CSV (path[,label,...])
    tiling: IngestConfig = field(default_factory=IngestConfig)  # how slides/fields are read and tiled (as ingest)
    data: Selection = field(default_factory=Selection)  # store: which tiles (default all), channels by name
    out: str = ""  # the embeddings table (the published output)
    name: str = ""  # what the MLflow run calls the input (``embed NAME``); default: the table's folder name
    batch_size: int = 128
    num_actors: int = 1
    use_gpu: bool | None = None  # default: when the Ray cluster has GPUs
    cpus_per_actor: float = 1.0
    l2_normalize: bool = True
    empty_below: float | None = None  # tiles with tissue_fraction below this get NaN vectors, not encoded
    on_error: Literal["stop", "skip"] = "stop"  # a slide that fails: stop before publishing, or skip it
    progress_every_s: float = 5.0
    overwrite: bool = False
    run_dir: str = "sslray-runs"  # where the default (SQLite) MLflow store lives
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        for key in ("checkpoint", "out"):
            if not getattr(self, key):
                raise ValueError(f"{key} is required")
        if bool(self.store) == bool(self.slides):
            raise ValueError("give exactly one input: store (a tile store) or slides (a folder, file or CSV of images)")
        if self.batch_size < 1 or self.num_actors < 1:
            raise ValueError("batch_size and num_actors must be >= 1")
        if self.empty_below is not None and not 0 <= self.empty_below <= 1:
            raise ValueError(f"empty_below must be a tissue fraction in [0, 1], got {self.empty_below}")
        if self.on_error not in ("stop", "skip"):
            raise ValueError(f"on_error must be stop or skip, got {self.on_error!r}")
        if self.slides and self.tiling.clip_percentiles is not None:
            raise ValueError("tiling.clip_percentiles needs a calibration pass over the dataset: ingest a store "
                             "for it, or give float_max")


def run_embed(cfg: EmbedConfig) -> str:
    """Embed every tile of the input; returns the URL of the published table."""
    from sslray.runtime import ensure_ray

    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    if not _finished_table(cfg.out):  # a finished table may be this job's: decided once the plan is known
        storage.check_destination(cfg.out, "embeddings", "embeddings table", cfg.overwrite)
    meta = read_meta(cfg.checkpoint)  # fail fast, before any Ray work
    job = _job(cfg, meta)
    if _already_published(cfg, job.plan):
        return cfg.out
    storage.check_destination(cfg.out, "embeddings", "embeddings table", cfg.overwrite)  # before any work
    ensure_ray()
    tags = {"sslray.checkpoint": tracking.redact(cfg.checkpoint), "sslray.embeddings": tracking.redact(cfg.out),
            "sslray.manifest_sha256": meta.lineage.manifest_sha256,
            **({"sslray.store": tracking.redact(cfg.store)} if cfg.store else
               {"sslray.slides": tracking.redact(cfg.slides)})}
    with tracked_run(cfg.tracking, cfg.run_dir, stage="embed", input=cfg.name or input_name(cfg.out),
                     config=to_dict(cfg), tags=tags) as run, \
            publishing(cfg.out, kind="embeddings", what="embeddings table", overwrite=cfg.overwrite,
                       resumable=True, keep_partial=partitions.is_partial_of(cfg.out, job.plan)) as output:
        started = time.perf_counter()
        done = partitions.check_plan(output.staging, job.plan, cfg.out)
        todo = [u for u in range(job.n_units) if u not in done]
        if done:
            log.info("resuming %s: %d of %d partitions were embedded before", cfg.out, len(done), job.n_units)
        progress = Progress(job.n_units, len(done), job.total_tiles(todo), every_s=cfg.progress_every_s)
        collector = UnitCollector(output.staging, todo, job.expected, job.schema, progress)
        run_collector(collector, lambda: job.blocks(todo, output.staging, _actors(cfg)))
        skipped = _settle_failures(cfg, job, collector.failed)
        n_rows = committed_rows(output.staging, job.n_units, collector.failed)
        output.info.update(_info(cfg, job, meta, output.staging, n_rows, skipped))
        partitions.finish(output.staging)
        seconds = time.perf_counter() - started
    run.log_metrics({"n_rows": n_rows, "n_partitions": job.n_units, "n_resumed": len(done), "n_failed": len(skipped),
                     "seconds": seconds, "tiles_per_s": collector.progress.tiles / max(seconds, 1e-9)})
    return cfg.out


def _job(cfg: EmbedConfig, meta: CheckpointMeta) -> StoreJob | SourceJob:
    if cfg.store:
        return StoreJob.make(cfg, meta, _select(TileStore.open(cfg.store), cfg.data, meta, cfg.checkpoint))
    return SourceJob.make(cfg, meta)


def _actors(cfg: EmbedConfig) -> Actors:
    return Actors(cfg.checkpoint, cfg.l2_normalize, cfg.empty_below, cfg.batch_size, cfg.num_actors,
                  cfg.cpus_per_actor, cfg.use_gpu)


def _already_published(cfg: EmbedConfig, plan: dict) -> bool:
    """A rerun of a job that finished (a resubmitted driver) returns its table instead of refusing."""
    if cfg.overwrite or not _finished_table(cfg.out):
        return False
    if partitions.recorded_plan(cfg.out) != plan:
        return False
    log.info("%s is already embedded by this job; nothing to do", cfg.out)
    return True


def _finished_table(url: str) -> bool:
    return storage.is_complete(url) and storage.artifact_kind(url) == "embeddings"


def _settle_failures(cfg: EmbedConfig, job: StoreJob | SourceJob, failed: dict[int, str]) -> list[dict[str, str]]:
    """Failed units, by name: stop before publishing (the rest are kept), or skip them."""
    listed = [{"source": job.unit_name(u), "reason": reason} for u, reason in sorted(failed.items())]
    if not listed:
        return []
    text = "\n".join(f"  {i['reason'] if i['reason'].startswith(i['source']) else i['source'] + ': ' + i['reason']}"
                     for i in listed)
    if cfg.on_error == "stop":
        raise EmbedError(f"{len(listed)} of {job.n_units} input(s) could not be embedded; the other "
                         f"{job.n_units - len(listed)} are kept and a rerun redoes only these (or pass "
                         f"--on-error skip to publish without them):\n{text}")
    log.warning("skipped %d input(s) that could not be embedded:\n%s", len(listed), text)
    return listed


def _info(cfg: EmbedConfig, job: StoreJob | SourceJob, meta: CheckpointMeta, staging: str, n_rows: int,
          skipped: list[dict[str, str]]) -> dict:
    channels = job.channels if isinstance(job, StoreJob) else _source_channels(staging, job.n_units)
    return {"checkpoint": cfg.checkpoint, **job.input_info(), "n_rows": n_rows, "dim": _written_dim(staging),
            "n_partitions": job.n_units, "l2_normalized": cfg.l2_normalize, "per_channel": meta.per_channel,
            "channels": channels, "empty_below": cfg.empty_below, "skipped": skipped}


def _source_channels(staging: str, n_units: int) -> list[str]:
    """The channels the sources were embedded with, as their read tasks reported them."""
    for unit in range(n_units):
        count = partitions.read_count(staging, unit)
        if count is not None and count.channels:
            return list(count.channels)
    return []


def _written_dim(staging: str) -> int | None:
    fs, root = storage.filesystem(staging)
    files = sorted(fs.glob(f"{root}/part-*.parquet"))
    if not files:
        return None
    with fs.open(files[0], "rb") as handle:
        return pq.read_schema(handle).field("embedding").type.list_size


def _select(store: TileStore, selection: Selection, meta: CheckpointMeta, checkpoint: str) -> TileStore:
    """The tiles asked for, with the checkpoint's channels picked by name when the store has more."""
    if meta.per_channel:  # channel-agnostic: any channels, each embedded on its own
        return store.select(selection)
    trained_on = meta.channels
    if selection.channels is None and trained_on and set(trained_on) <= set(store.info.channels):
        selection = replace(selection, channels=list(trained_on))
    view = store.select(selection)
    if view.info.n_channels != meta.in_chans:
        raise ValueError(f"{store.url} gives {view.info.n_channels} channels {view.info.channels} but the checkpoint "
                         f"{checkpoint} expects {meta.in_chans} ({trained_on}); choose them with data.channels")
    return view
