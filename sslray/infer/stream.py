"""The Ray Data half of embedding: units of work -> readers -> a pool of encoder actors -> the driver.

Readers (tasks, a CPU each) and ``Embedder`` actors (a GPU each when the cluster has GPUs) form
one streaming pipeline, so while the actors embed one slide or shard the next ones are already
being read: the accelerator does not wait between slides. The embedded blocks stream back to
the driver, which commits them unit by unit (``collect.py``). This is the only Ray in embedding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from sslray.artifacts.embeddings import carried_columns
from sslray.artifacts.tile_store import TileStore
from sslray.data.ingest_config import IngestConfig
from sslray.data.sources import SourceImage
from sslray.infer.collect import INDEX, UNIT
from sslray.infer.encoder import Embedder
from sslray.infer.units import ChannelPlan, read_unit


READ_MEMORY = 256 << 20  # bytes a slide read task reserves


@dataclass(frozen=True)
class Actors:
    """How the encoder actors are placed: from ``EmbedConfig``."""

    checkpoint: str
    l2_normalize: bool
    empty_below: float | None
    batch_size: int
    num_actors: int
    cpus_per_actor: float
    use_gpu: bool | None


def store_blocks(store: TileStore, groups: list[np.ndarray], todo: list[int], actors: Actors) -> Iterator[pa.Table]:
    """Embedded blocks of the store shards ``todo`` (indices into ``groups``), each row tagged
    with its unit (the shard group) and its index (the store row, so units keep store order)."""
    from sslray.data.datasource import read_tile_store

    rows = np.concatenate([groups[u] for u in todo]) if todo else np.empty(0, np.int64)
    view = TileStore(store.url, replace(store.info, n_tiles=len(rows)), store.store_manifest, rows,
                     store.channel_index, store.selection)
    dataset = read_tile_store(view, columns=carried_columns(store.store_manifest.column_names))
    for block in _embedded(dataset, actors):
        yield tag_store_block(block, groups)


def tag_store_block(block: pa.Table, groups: list[np.ndarray]) -> pa.Table:
    """A store block's rows tagged with their unit (shard group) and index (the store row)."""
    starts = np.array([int(g[0]) for g in groups])
    tile_id = block.column("tile_id").to_numpy()
    unit = np.searchsorted(starts, tile_id, side="right") - 1
    return block.append_column(UNIT, pa.array(unit)).append_column(INDEX, pa.array(tile_id))


def source_blocks(sources: list[SourceImage], todo: list[int], tiling: IngestConfig, schema: pa.Schema,
                  channels: ChannelPlan, staging: str, actors: Actors, base: str | None = None) -> Iterator[pa.Table]:
    """Embedded blocks of the sources ``todo``: one read task per source, tiles read in the task."""
    import ray

    def read(batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for unit in batch["unit"]:
            yield from read_unit(int(unit), sources[int(unit)], tiling, schema, channels, staging, base)

    items = ray.data.from_items([{"unit": u} for u in todo], override_num_blocks=max(1, len(todo)))
    # A read task holds one slide's mask and a batch of decoded tiles: READ_MEMORY reserves that.
    # It also makes the two steps' resources differ, which keeps Ray Data from fusing the reads into
    # the actor (it does when both ask for the same CPUs: one process then reads, then encodes),
    # so the next slides are read while the actor embeds.
    dataset = items.map_batches(read, batch_size=1, batch_format="numpy", num_cpus=1, memory=READ_MEMORY)
    yield from _embedded(dataset, actors)


def _embedded(dataset, actors: Actors) -> Iterator[pa.Table]:
    from ray.data import ActorPoolStrategy

    from sslray.runtime import cluster_has_gpus

    use_gpu = cluster_has_gpus() if actors.use_gpu is None else actors.use_gpu
    embedded = dataset.map_batches(
        Embedder,
        fn_constructor_kwargs={"checkpoint": actors.checkpoint, "l2_normalize": actors.l2_normalize,
                               "empty_below": actors.empty_below},
        batch_size=actors.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=actors.num_actors),
        num_gpus=1 if use_gpu else 0,
        num_cpus=actors.cpus_per_actor,
    )
    yield from embedded.iter_batches(batch_format="pyarrow", batch_size=None)
