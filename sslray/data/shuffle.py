"""Batches that mix tiles from many shards, drawn from a shuffle buffer of whole blocks.

A store keeps tiles in source order, so one shard holds tiles of one slide or a few
fields. Batches cut from one shard would hold one slide, which starves contrastive
negatives and skews batch statistics. Training therefore keeps a buffer of several
thousand tiles from many shards and draws each batch at random from it, replacing what it
took with the newest tiles (swap-remove, so a batch costs O(batch) copies). Ray Data's own
``local_shuffle_buffer_size`` does the same through Arrow concatenation and was measured
about 18x slower here (docs/stack_facts.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

Batch = dict[str, np.ndarray]


class ShuffleBuffer:
    """A fixed-capacity pool of rows; ``take`` removes ``n`` rows chosen uniformly at random."""

    def __init__(self, capacity: int, seed: int | tuple[int, ...] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"shuffle buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.columns: Batch = {}
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, block: Batch) -> None:
        n = len(next(iter(block.values())))
        if not self.columns:  # room for a full buffer plus one more block; reused epoch after epoch
            self.columns = {k: np.empty((self.capacity + 2 * n, *v.shape[1:]), v.dtype) for k, v in block.items()}
        if set(block) != set(self.columns):
            raise ValueError(f"block columns {sorted(block)} differ from earlier blocks' {sorted(self.columns)}")
        self._reserve(self.size + n)
        for key, values in block.items():
            self.columns[key][self.size : self.size + n] = values
        self.size += n

    def clear(self) -> None:
        self.size = 0

    def take(self, n: int) -> Batch:
        n = min(n, self.size)
        picked = self.rng.choice(self.size, size=n, replace=False)
        batch = {k: v[picked] for k, v in self.columns.items()}  # fancy indexing copies
        # Fill the holes below the new end with the rows above it that were not picked.
        new_size = self.size - n
        holes = np.sort(picked[picked < new_size])
        tail = np.setdiff1d(np.arange(new_size, self.size), picked, assume_unique=True)
        for values in self.columns.values():
            values[holes] = values[tail]
        self.size = new_size
        return batch

    def _reserve(self, rows: int) -> None:
        current = len(next(iter(self.columns.values())))
        if rows <= current:
            return
        for key, values in self.columns.items():
            grown = np.empty((max(rows, current * 2), *values.shape[1:]), values.dtype)
            grown[: self.size] = values[: self.size]
            self.columns[key] = grown


def shuffled_batches(blocks: Iterable[Batch], batch_size: int, buffer: ShuffleBuffer | int,
                     seed: int | tuple[int, ...] | None = None, drop_last: bool = True) -> Iterator[Batch]:
    """One pass over ``blocks`` as batches drawn at random from a shuffle buffer.

    ``buffer`` is a capacity in tiles, or a drained ``ShuffleBuffer`` to reuse: its memory is
    then allocated (and paged in) once per worker, not once per epoch.
    """
    if isinstance(buffer, int):
        buffer = ShuffleBuffer(max(buffer, batch_size))
    if len(buffer):
        raise ValueError("the shuffle buffer still holds tiles of an earlier pass")
    buffer.rng = np.random.default_rng(seed)
    for block in blocks:
        buffer.add(block)
        while len(buffer) >= buffer.capacity + batch_size:
            yield buffer.take(batch_size)
    while len(buffer) >= batch_size:
        yield buffer.take(batch_size)
    if len(buffer) and not drop_last:
        yield buffer.take(len(buffer))
