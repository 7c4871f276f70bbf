"""Batch embedding: a tile store + a checkpoint -> the embeddings table.

Ray Data streams tiles from the store through a pool of actors (``map_batches`` with an
``ActorPoolStrategy``), each holding one copy of the encoder (one GPU per actor when the
cluster has GPUs). The table is parquet: the manifest's identifying and grouping columns,
``embedding`` as a fixed-size list of float32 (L2-normalised by default) and the checkpoint
it came from. It is published atomically like every sslray output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import torch

from sslray import storage, tracking
from sslray.artifacts.checkpoint import CheckpointMeta, load_encoder, read_meta
from sslray.artifacts.embeddings import carried_columns, embeddings_batch
from sslray.artifacts.selection import Selection
from sslray.artifacts.tile_store import TileStore
from sslray.config import to_dict
from sslray.data.transforms import normalize, resize, to_unit
from sslray.stage import input_name, publishing, tracked_run


@dataclass
class EmbedConfig:
    checkpoint: str = ""
    store: str = ""
    data: Selection = field(default_factory=Selection)  # default: all tiles, the checkpoint's channels
    out: str = ""  # the embeddings table (the published output)
    name: str = ""  # what the MLflow run calls the input (``embed NAME``); default: the table's folder name
    batch_size: int = 128
    num_actors: int = 1
    use_gpu: bool | None = None  # default: when the Ray cluster has GPUs
    cpus_per_actor: float = 1.0
    l2_normalize: bool = True
    overwrite: bool = False
    run_dir: str = "sslray-runs"  # where the default (SQLite) MLflow store lives
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        for key in ("checkpoint", "store", "out"):
            if not getattr(self, key):
                raise ValueError(f"{key} is required")
        if self.batch_size < 1 or self.num_actors < 1:
            raise ValueError("batch_size and num_actors must be >= 1")


class Embedder:
    """A Ray Data actor: loads the encoder once, then embeds batch after batch."""

    def __init__(self, checkpoint: str, l2_normalize: bool) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder, self.meta = load_encoder(checkpoint)
        self.encoder.to(self.device)
        self.checkpoint = checkpoint
        self.l2_normalize = l2_normalize

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        images = torch.from_numpy(np.ascontiguousarray(batch.pop("image"))).to(self.device)
        features = encode(self.encoder, images, self.meta, self.device)
        if self.l2_normalize:  # per channel block for channel-agnostic encoders, so no channel dominates
            features = torch.nn.functional.normalize(features.view(len(images), -1, self.meta.embed_dim), dim=-1)
        return embeddings_batch(batch, features.reshape(len(images), -1).cpu().numpy(), self.checkpoint)


def encode(encoder: torch.nn.Module, images: torch.Tensor, meta: CheckpointMeta, device: torch.device) -> torch.Tensor:
    """Raw tiles -> embeddings as the checkpoint prescribes: scale, resize, normalise, encode.

    A channel-agnostic checkpoint (``per_channel``) encodes each channel as its own image and
    concatenates the C vectors in channel order: (B, C * D).
    """
    x = resize(to_unit(images, meta.scale), meta.image_size)
    b, c = x.shape[:2]
    if meta.per_channel:
        x = x.reshape(b * c, 1, *x.shape[2:])
    x = normalize(x, meta.mean, meta.std)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        features = encoder(x).float()
    return features.reshape(b, -1)


def run_embed(cfg: EmbedConfig) -> str:
    """Embed every tile of ``cfg.store``; returns the URL of the published table."""
    from sslray.runtime import ensure_ray

    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    storage.check_destination(cfg.out, "embeddings", "embeddings table", cfg.overwrite)  # before any work
    meta = read_meta(cfg.checkpoint)  # fail fast, before any Ray work
    ensure_ray()
    store = _select(TileStore.open(cfg.store), cfg.data, meta, cfg.checkpoint)
    tags = {"sslray.checkpoint": tracking.redact(cfg.checkpoint), "sslray.store": tracking.redact(cfg.store),
            "sslray.embeddings": tracking.redact(cfg.out), "sslray.manifest_sha256": meta.lineage.manifest_sha256}
    with tracked_run(cfg.tracking, cfg.run_dir, stage="embed", input=cfg.name or input_name(cfg.out),
                     config=to_dict(cfg), tags=tags) as run, \
            publishing(cfg.out, kind="embeddings", what="embeddings table", overwrite=cfg.overwrite) as output:
        started = time.perf_counter()
        _embedded(cfg, store).write_parquet(output.staging)
        seconds = time.perf_counter() - started
        dim = meta.embed_dim * (store.info.n_channels if meta.per_channel else 1)
        output.info.update({"checkpoint": cfg.checkpoint, "store": cfg.store, "n_rows": len(store), "dim": dim,
                            "l2_normalized": cfg.l2_normalize, "per_channel": meta.per_channel,
                            "channels": list(store.info.channels)})  # the embedded channels, in block order
    run.log_metrics({"n_rows": len(store), "seconds": seconds, "tiles_per_s": len(store) / max(seconds, 1e-9)})
    return cfg.out


def _embedded(cfg: EmbedConfig, store: TileStore):
    """The lazy Ray Data pipeline: the store's tiles through a pool of ``Embedder`` actors."""
    from ray.data import ActorPoolStrategy

    from sslray.data.datasource import read_tile_store
    from sslray.runtime import cluster_has_gpus

    use_gpu = cluster_has_gpus() if cfg.use_gpu is None else cfg.use_gpu
    return read_tile_store(store, columns=carried_columns(store.manifest_table.column_names)).map_batches(
        Embedder,
        fn_constructor_kwargs={"checkpoint": cfg.checkpoint, "l2_normalize": cfg.l2_normalize},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=cfg.num_actors),
        num_gpus=1 if use_gpu else 0,
        num_cpus=cfg.cpus_per_actor,
    )


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
