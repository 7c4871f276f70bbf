"""The driver's half of exactly-once embedding: embedded rows in, one committed partition per unit.

Rows of a unit arrive from many actors, in any order and possibly more than once (a retried
Ray task replays its rows). The collector keeps each unit's rows by their index in the unit
(so a replay overwrites instead of duplicating), and commits the unit once it holds as many
distinct rows as the unit has tiles: known up front for a store shard, and from the read task's
count (``partitions.read_count``) for a slide or field, whose number of tissue tiles is only
known once it has been read. A unit whose read failed is dropped and reported by name. Only
embeddings (a few KiB per tile) wait here, never pixels. No Ray import.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sslray.artifacts.vector_table import EMBEDDING
from sslray.infer import partitions
from sslray.infer.partitions import UnitCount
from sslray.infer.progress import Progress

UNIT, INDEX = "_unit", "_index"  # where a row came from: its unit, and its place in the unit


@dataclass
class _Pending:
    blocks: list[pa.Table] = field(default_factory=list)  # as they came, replays included
    seen: set[int] = field(default_factory=set)


class UnitCollector:
    """``expected``: tiles per unit when known before reading (store shards), else None."""

    def __init__(self, staging: str, todo: list[int], expected: dict[int, int] | None, schema: pa.Schema,
                 progress: Progress, poll_s: float = 1.0) -> None:
        self.staging, self.schema, self.progress, self.poll_s = staging, schema, progress, poll_s
        self.todo = set(todo)
        self.expected = dict(expected or {})
        self.pending: dict[int, _Pending] = {}
        self.failed: dict[int, str] = {}
        self.committed: set[int] = set()
        self._polled = 0.0

    def add(self, table: pa.Table) -> None:
        """One block of embedded rows (any units, any order)."""
        units = table.column(UNIT).to_numpy()
        for unit in np.unique(units):
            unit = int(unit)
            if unit in self.committed or unit in self.failed or unit not in self.todo:
                continue  # a replayed block of a unit already written: nothing to add
            rows = table.filter(pc.equal(table.column(UNIT), unit))
            pending = self.pending.setdefault(unit, _Pending())
            indices = rows.column(INDEX).to_numpy()
            new = [int(i) for i in indices if int(i) not in pending.seen]
            pending.seen.update(new)
            pending.blocks.append(rows)
            self.progress.add_tiles(len(new))
            self._try_commit(unit, self.expected.get(unit))
        if time.perf_counter() - self._polled >= self.poll_s:
            self.poll()

    def poll(self, final: bool = False) -> None:
        """Commit or fail the units whose read tasks have reported their count."""
        self._polled = time.perf_counter()
        waiting = self.todo - self.committed - set(self.failed)
        for unit in sorted(waiting if final else waiting & set(self.pending)):
            count = self._count(unit)
            if count is None:
                if final:
                    self._fail(unit, "its read task ended without reporting the unit finished")
                continue
            if count.error:
                self._fail(unit, count.error)
            elif not self._try_commit(unit, count.n_tiles) and final:
                got = len(self.pending.get(unit, _Pending()).seen)
                self._fail(unit, f"{count.n_tiles} tiles were read but {got} came back embedded")

    def _count(self, unit: int) -> UnitCount | None:
        if unit in self.expected:
            return UnitCount(self.expected[unit])
        return partitions.read_count(self.staging, unit)

    def _try_commit(self, unit: int, n_tiles: int | None) -> bool:
        pending = self.pending.get(unit, _Pending())
        if n_tiles is None or len(pending.seen) < n_tiles:
            return False
        if len(pending.seen) > n_tiles:
            raise RuntimeError(f"unit {unit}: {len(pending.seen)} distinct rows for {n_tiles} tiles")
        partitions.write_unit(self.staging, unit, self._rows(pending))
        self.pending.pop(unit, None)
        self.committed.add(unit)
        self.progress.unit_done()
        return True

    def _rows(self, pending: _Pending) -> pa.Table:
        """The unit's rows in tile order, each once, in the table's schema."""
        if not pending.blocks:
            return self.schema.empty_table()
        table = pa.concat_tables(pending.blocks, promote_options="permissive")
        order = np.argsort(table.column(INDEX).to_numpy(), kind="stable")
        index = table.column(INDEX).to_numpy()[order]
        first = np.concatenate([[True], index[1:] != index[:-1]]) if len(index) else np.ones(0, bool)
        table = table.take(pa.array(order[first]))
        table = table.drop_columns([UNIT, INDEX]).select(self.schema.names)
        return table.cast(_target_schema(self.schema, table.schema))

    def _fail(self, unit: int, reason: str) -> None:
        self.failed[unit] = reason
        self.pending.pop(unit, None)


def _target_schema(schema: pa.Schema, data: pa.Schema) -> pa.Schema:
    """The table's schema, with the types only the data can tell taken from it: the embedding
    width of a channel-agnostic encoder (known once the channels are read) and columns that are
    empty (null-typed) in the manifest, which Ray hands back as what numpy made of them."""
    for name in schema.names:
        if name == EMBEDDING or pa.types.is_null(schema.field(name).type):
            schema = schema.set(schema.get_field_index(name), data.field(name))
    return schema


def run_collector(collector: UnitCollector, blocks: Callable[[], object]) -> UnitCollector:
    """Feed every embedded block to the collector, then settle the units still waiting. When the
    pipeline fails, the units already complete are committed first, so a rerun need not redo them."""
    try:
        for block in blocks():
            collector.add(block)
    except BaseException:
        collector.poll()
        raise
    collector.poll(final=True)
    collector.progress.close()
    return collector
