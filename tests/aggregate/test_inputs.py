"""The aggregation's input: a complete embeddings table with the spot column and tile positions."""

import pyarrow as pa
import pytest

from sslray import storage
from sslray.aggregate.inputs import plain, read_embeddings, table_grids
from tests.aggregate.tables import tiles_of, write_table


def test_reads_the_needed_and_carried_columns_and_builds_the_grids(tmp_path):
    tiles = tiles_of(4)
    table = read_embeddings(write_table(tmp_path / "emb", tiles), "image_id", ["label", "nope"])
    assert table.column_names == ["image_id", "embedding", "x", "y", "label"]
    grids, step = table_grids(table, "image_id")
    assert len(grids) == 4 and step == (64, 64) and sum(g.n_tiles for g in grids) == table.num_rows


def test_missing_spot_column_lists_the_available_ones(tmp_path):
    url = write_table(tmp_path / "emb", tiles_of(4))
    with pytest.raises(KeyError, match=r"spot_column 'spot_id' is not a column of .*available columns: tile_id, "
                                        r"image_id, x, y"):
        read_embeddings(url, "spot_id", [])


def test_incomplete_table_and_missing_positions_are_refused(tmp_path):
    tiles = tiles_of(4)
    url = write_table(tmp_path / "emb", tiles)
    (tmp_path / "emb" / storage.SUCCESS_MARKER).unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        read_embeddings(url, "image_id", [])
    no_xy = write_table(tmp_path / "emb2", {k: v for k, v in tiles.items() if k not in ("x", "y")})
    with pytest.raises(KeyError, match=r"lacks column\(s\) \['x', 'y'\]"):
        read_embeddings(no_xy, "image_id", [])


def test_null_spot_ids_are_refused_and_dictionaries_decoded():
    table = pa.table({"image_id": pa.array(["a", None]), "x": [0, 64], "y": [0, 0]})
    with pytest.raises(ValueError, match="1 null values"):
        table_grids(table, "image_id")
    assert plain(pa.chunked_array([pa.array(["a", "b"]).dictionary_encode()])).to_pylist() == ["a", "b"]
