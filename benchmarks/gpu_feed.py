"""The GPU suite's input side in plain torch: tile-store reads through a torch DataLoader, timers.

Ray Data is the feed in production; on a lent GPU machine (no Ray) the suite reads the same
store with sslray's own ``TileStore.read``, one shard per DataLoader item (a shard is the unit one
read serves, as one Ray Data block is), mixes them through sslray's ``ShuffleBuffer`` as the
training loop does, and moves batches to the device with ``non_blocking=True`` as
``epoch_batches`` does. Workers are spawned, not forked: zarr keeps an event-loop thread that a
forked child would inherit without its thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sslray.artifacts.tile_store import TileStore
from sslray.data.shuffle import ShuffleBuffer, shuffled_batches

T = TypeVar("T")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], T]) -> tuple[float, T]:
    """(seconds ``work`` takes, its device work included (synchronised before and after), its result)."""
    sync(device)
    start = time.perf_counter()
    result = work()
    sync(device)
    return time.perf_counter() - start, result


class ShardBlocks(Dataset):
    """Item i: the tiles of store shard i, (n, C, H, W) uint8, read with ``TileStore.read``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.store = TileStore.open(url)
        self.shard = self.store.info.shard_tiles

    def __len__(self) -> int:
        return -(-len(self.store) // self.shard)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store.read(i * self.shard, (i + 1) * self.shard)


def shard_loader(url: str, workers: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Whole shards from ``workers`` spawned processes (0: read in this process), prefetched."""
    options = {"multiprocessing_context": "spawn", "persistent_workers": True, "prefetch_factor": 4} if workers else {}
    return DataLoader(ShardBlocks(url), batch_size=None, shuffle=shuffle, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed), **options)


def training_feed(loader: DataLoader, batch: int, buffer_tiles: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Endless device batches: epoch after epoch of shuffled shards, mixed in one reused buffer."""
    buffer = ShuffleBuffer(max(buffer_tiles, batch))
    epoch = 0
    while True:
        blocks = ({"image": block.numpy()} for block in loader)
        buffer.clear()
        for drawn in shuffled_batches(blocks, batch, buffer, (0, epoch)):
            yield torch.from_numpy(drawn["image"]).to(device, non_blocking=True)
        epoch += 1


def in_order_batches(loader: DataLoader, batch: int) -> Iterator[np.ndarray]:
    """One pass over the store in order, cut into batches (an embedding job's read)."""
    for block in loader:
        tiles = block.numpy()
        for start in range(0, len(tiles), batch):
            yield tiles[start : start + batch]


def device_name(device: torch.device) -> str:
    """The accelerator's name for file names: 'NVIDIA-H100-80GB-HBM3', or 'cpu-16core'."""
    import os
    import re

    if device.type == "cuda":
        return re.sub(r"[^A-Za-z0-9.]+", "-", torch.cuda.get_device_name(device)).strip("-")
    return f"cpu-{os.cpu_count()}core"
