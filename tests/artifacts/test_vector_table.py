"""Tables of vectors: read as typed objects of either kind, their embedding column checked."""

import numpy as np
import pyarrow as pa
import pytest

import pyarrow.parquet as pq

from sslray import storage
from sslray.artifacts.vector_table import PLAIN, VectorTable, embedding_matrix, is_plain_parquet, read_parquet_dir
from tests.artifacts.tables import publish_table, vectors


def test_a_table_reads_the_columns_asked_for_plus_the_embedding(tmp_path):
    url = publish_table(pa.table({"tile_id": [0, 1], "label": ["a", "b"], "embedding": vectors([[1, 0], [0, 1]])}),
                        tmp_path / "emb", "embeddings")
    table = VectorTable.read(url, columns=["label"])
    assert table.table.column_names == ["label", "embedding"] and (table.kind, table.dim) == ("embeddings", 2)
    with pytest.raises(KeyError, match=r"lacks column\(s\) \['plate'\]; available columns: tile_id, label"):
        read_parquet_dir(url, ["plate"])


def test_plain_lists_of_equal_length_read_as_vectors(tmp_path):
    table = pa.table({"embedding": pa.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], pa.list_(pa.float64()))})
    read = VectorTable.read(publish_table(table, tmp_path / "emb", "embeddings"))
    assert read.dim == 3
    np.testing.assert_array_equal(read.matrix(), np.array([[1, 2, 3], [4, 5, 6]], np.float32))


def test_a_table_without_an_embedding_column_is_named(tmp_path):
    with pytest.raises(ValueError, match="no 'embedding' column .*columns: tile_id"):
        VectorTable("t", "embeddings", pa.table({"tile_id": [0]}), 1)


def test_an_embedding_column_that_is_not_vectors_is_named():
    with pytest.raises(TypeError, match="must be a list of floats"):
        VectorTable("t", "embeddings", pa.table({"embedding": ["x"]}), 1)
    with pytest.raises(ValueError, match="different lengths"):
        embedding_matrix(pa.chunked_array([pa.array([[1.0], [1.0, 2.0]])]))
    with pytest.raises(ValueError, match="null rows"):
        embedding_matrix(pa.chunked_array([pa.array([[1.0], None])]))


def test_read_any_takes_a_plain_parquet_file_or_folder_but_not_an_unfinished_output(tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir()
    pq.write_table(pa.table({"slide_id": ["s1", "s2"], "embedding": vectors([[1.0, 2.0], [3.0, 4.0]])}),
                   folder / "part-0.parquet")
    for url in (str(folder), str(folder / "part-0.parquet")):
        table = VectorTable.read_any(url)
        assert table.kind == PLAIN and table.dim == 2 and table.matrix()[1, 0] == 3.0
    (folder / storage.WRITING_MARKER).write_text('{"kind": "embeddings"}')
    assert not is_plain_parquet(str(folder))
    with pytest.raises(FileNotFoundError):
        VectorTable.read_any(str(folder))


def test_read_any_reads_a_published_table_by_its_kind(tmp_path):
    url = publish_table(pa.table({"embedding": vectors([[1.0], [2.0]])}), tmp_path / "emb", "embeddings")
    assert not is_plain_parquet(url) and VectorTable.read_any(url).kind == "embeddings"
