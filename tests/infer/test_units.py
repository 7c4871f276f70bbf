"""Reading one source for embedding: ingest's tiles, tagged rows, the count or the failure recorded."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sslray.data.ingest_config import IngestConfig
from sslray.data.sources import SourceImage
from sslray.infer import partitions
from sslray.infer.collect import INDEX, UNIT
from sslray.infer.units import ChannelPlan, read_unit, row_schema
from tests.conftest import write_png


@pytest.fixture
def field(tmp_path) -> SourceImage:
    rng = np.random.default_rng(0)
    path = write_png(tmp_path / "a" / "f1.png", rng.integers(0, 255, (96, 64, 3), dtype=np.uint8))
    return SourceImage(path, "a/f1.png", label="a", extra={"well": "C03", "site": 3})


def test_the_schema_types_each_column_once_and_keeps_only_columns_some_source_has(field):
    schema = row_schema([field, SourceImage(Path("b.png"), "b.png")], slides=False)
    assert schema.field("label").type == pa.string() and "group" not in schema.names
    assert schema.field("site").type == pa.float64() and schema.field("well").type == pa.string()
    assert "slide_id" not in schema.names and "slide_id" in row_schema([field], slides=True).names


def test_a_field_is_read_as_ingest_tiles_it_tagged_by_unit_and_index_and_its_count_recorded(field, tmp_path):
    staging = str(tmp_path / "staging")
    schema = row_schema([field], slides=False)
    batches = list(read_unit(7, field, IngestConfig(tile_size=32), schema, ChannelPlan(None, 3), staging))
    assert len(batches) == 1 and batches[0]["image"].shape == (6, 3, 32, 32)  # 2 x 3 tiles of 32 px
    batch = batches[0]
    assert batch[UNIT].tolist() == [7] * 6 and batch[INDEX].tolist() == list(range(6))
    assert batch["x"].tolist() == [0, 32, 0, 32, 0, 32] and batch["well"].tolist() == ["C03"] * 6
    assert partitions.read_count(staging, 7) == partitions.UnitCount(6, None, ("R", "G", "B"))


def test_channels_are_picked_by_the_checkpoints_names_and_a_wrong_count_fails_the_unit_by_name(field, tmp_path):
    staging = str(tmp_path / "staging")
    schema = row_schema([field], slides=False)
    picked = list(read_unit(0, field, IngestConfig(tile_size=32), schema, ChannelPlan(("B", "R"), 2), staging))
    assert picked[0]["image"].shape[1] == 2 and partitions.read_count(staging, 0).channels == ("B", "R")
    assert not list(read_unit(1, field, IngestConfig(tile_size=32), schema, ChannelPlan(None, 2), staging))
    failure = partitions.read_count(staging, 1)
    assert failure.error.startswith(str(field.path)) and "has 3 channels" in failure.error


def test_a_file_that_cannot_be_read_is_a_recorded_failure_not_an_exception(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    staging = str(tmp_path / "staging")
    source = SourceImage(bad, "broken.png")
    assert not list(read_unit(0, source, IngestConfig(tile_size=32), row_schema([source], False),
                              ChannelPlan(None, None), staging))
    count = partitions.read_count(staging, 0)
    assert count.n_tiles == 0 and str(bad) in count.error


def test_any_error_a_reader_raises_on_a_corrupt_file_fails_only_that_unit(monkeypatch, field, tmp_path):
    def corrupt(*_):
        raise IndexError("index 0 out of range(0)")  # what tifffile raises for a TIFF without pages
        yield

    monkeypatch.setattr("sslray.infer.units.source_tiles", corrupt)
    staging = str(tmp_path / "staging")
    assert not list(read_unit(0, field, IngestConfig(), row_schema([field], False), ChannelPlan(None, None), staging))
    assert partitions.read_count(staging, 0).error == f"{field.path}: cannot be read (IndexError: index 0 out of range(0))"
