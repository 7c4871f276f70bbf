"""Partitions of the embeddings table: committed once, resumed by plan, never mixed across jobs."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslray import storage
from sslray.infer import partitions
from sslray.infer.partitions import EmbedPlanMismatch, UnitCount

PLAN = {"checkpoint": "ckpt/a", "encoder_sha256": "abc", "n_units": 3}


def _table(n: int) -> pa.Table:
    return pa.table({"image_id": [f"i{k}" for k in range(n)], "x": list(range(n))})


def test_a_fresh_plan_is_recorded_and_a_rerun_of_it_finds_the_committed_units(tmp_path):
    staging = str(tmp_path / "out")
    assert partitions.check_plan(staging, PLAN, "out") == set()
    partitions.write_unit(staging, 0, _table(4))
    partitions.write_unit(staging, 2, _table(0))  # a unit without tiles: a marker, no file
    assert partitions.check_plan(staging, PLAN, "out") == {0, 2}
    assert pq.read_table(f"{staging}/{partitions.part_name(0)}").num_rows == 4
    assert not (tmp_path / "out" / partitions.part_name(2)).exists()
    assert [partitions.unit_rows(staging, u) for u in (0, 2)] == [4, 0]


def test_another_jobs_plan_over_committed_units_is_refused_naming_what_differs(tmp_path):
    staging = str(tmp_path / "out")
    partitions.check_plan(staging, PLAN, "out")
    partitions.write_unit(staging, 1, _table(2))
    with pytest.raises(EmbedPlanMismatch, match=r"1 finished partition.*differs in checkpoint, encoder_sha256"):
        partitions.check_plan(staging, {**PLAN, "checkpoint": "ckpt/b", "encoder_sha256": "def"}, "out")
    assert partitions.committed_units(staging) == {1}  # nothing of the other job was touched


def test_another_plan_with_nothing_committed_replaces_the_leftovers(tmp_path):
    staging = str(tmp_path / "out")
    partitions.check_plan(staging, PLAN, "out")
    partitions.record_count(staging, 0, UnitCount(5))
    other = {**PLAN, "n_units": 9}
    assert partitions.check_plan(staging, other, "out") == set()
    assert storage.read_json(f"{staging}/{partitions.PLAN_FILE}") == other
    assert partitions.read_count(staging, 0) is None


def test_counts_round_trip_and_finish_keeps_the_plan_for_a_rerun(tmp_path):
    staging = str(tmp_path / "out")
    partitions.check_plan(staging, PLAN, "out")
    assert partitions.read_count(staging, 1) is None  # still reading
    partitions.record_count(staging, 1, UnitCount(0, "slide.svs: cannot open", ("R", "G", "B")))
    assert partitions.read_count(staging, 1) == UnitCount(0, "slide.svs: cannot open", ("R", "G", "B"))
    partitions.finish(staging)
    assert partitions.read_count(staging, 1) is None and partitions.recorded_plan(staging) == PLAN
    assert partitions.recorded_plan(str(tmp_path / "elsewhere")) is None
