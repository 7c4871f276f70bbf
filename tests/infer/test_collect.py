"""The driver's collector: rows in any order and replayed, committed once per unit, failures by unit."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslray.infer import partitions
from sslray.infer.collect import INDEX, UNIT, UnitCollector, run_collector
from sslray.infer.jobs import output_schema
from sslray.infer.partitions import UnitCount
from sslray.infer.progress import Progress

SCHEMA = output_schema(pa.schema([("image_id", pa.string()), ("x", pa.int64())]), 2)


def _block(unit: int, indices: list[int]) -> pa.Table:
    n = len(indices)
    flat = pa.array(np.repeat(np.asarray(indices, np.float32), 2))
    return pa.table({"image_id": [f"u{unit}" for _ in indices], "x": [i * 10 for i in indices],
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, 2),
                     "checkpoint": pa.array(["ck"] * n).dictionary_encode(),
                     UNIT: [unit] * n, INDEX: indices})


def _collector(staging: str, todo, expected=None) -> UnitCollector:
    partitions.check_plan(staging, {"n": len(todo)}, "out")
    return UnitCollector(staging, todo, expected, SCHEMA, Progress(len(todo), every_s=3600, stream=io.StringIO()))


def test_a_unit_is_committed_once_complete_in_tile_order_with_replays_counted_once(tmp_path):
    staging = str(tmp_path)
    collector = _collector(staging, [0, 1], expected={0: 4, 1: 2})
    collector.add(_block(0, [2, 3]))
    collector.add(_block(0, [2, 3]))  # a retried task replays its rows
    assert collector.committed == set()
    collector.add(pa.concat_tables([_block(1, [1, 0]), _block(0, [1, 0])]))
    assert collector.committed == {0, 1} and collector.progress.tiles == 6
    table = pq.read_table(f"{staging}/{partitions.part_name(0)}")
    assert table.column("x").to_pylist() == [0, 10, 20, 30] and table.schema.names == SCHEMA.names
    collector.add(_block(0, [3]))  # after the commit: ignored, the file is not rewritten
    assert pq.read_table(f"{staging}/{partitions.part_name(0)}").num_rows == 4


def test_a_source_unit_waits_for_its_read_count_and_a_failed_read_is_dropped_by_unit(tmp_path):
    staging = str(tmp_path)
    collector = _collector(staging, [0, 1, 2])
    collector.add(_block(0, [0, 1]))
    collector.add(_block(1, [0]))
    assert collector.committed == set()  # no count yet: more tiles may come
    partitions.record_count(staging, 0, UnitCount(2))
    partitions.record_count(staging, 1, UnitCount(1, "b.svs: truncated"))
    partitions.record_count(staging, 2, UnitCount(0))  # no tissue: done, without rows
    run_collector(collector, lambda: [])
    assert collector.committed == {0, 2} and collector.failed == {1: "b.svs: truncated"}
    assert partitions.committed_units(staging) == {0, 2}


def test_at_the_end_a_unit_without_a_count_or_with_rows_missing_fails(tmp_path):
    staging = str(tmp_path)
    collector = _collector(staging, [0, 1])
    partitions.record_count(staging, 1, UnitCount(3))
    collector.add(_block(1, [0, 1]))
    collector.poll(final=True)
    assert "without reporting" in collector.failed[0] and "3 tiles were read but 2" in collector.failed[1]


def test_more_distinct_rows_than_tiles_is_a_bug_not_a_table(tmp_path):
    collector = _collector(str(tmp_path), [0], expected={0: 1})
    with pytest.raises(RuntimeError, match="distinct rows"):
        collector.add(_block(0, [0, 1]))
