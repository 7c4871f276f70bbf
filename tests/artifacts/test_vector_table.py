"""Tables of vectors: embeddings and spot tables read as typed objects, their embedding column checked."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslray import storage
from sslray.artifacts.embeddings import CHECKPOINT, EmbeddingsTable, carried_columns, embeddings_batch
from sslray.artifacts.spot_table import TABLE_FILE, SpotTable
from sslray.artifacts.vector_table import VectorTable, embedding_matrix


def _publish(table: pa.Table, url, kind: str, **info) -> str:
    url = str(url)
    staging = storage.begin_output(url, False, what=kind, kind=kind)
    pq.write_table(table, f"{staging}/part-0.parquet")
    storage.publish_output(staging, url, {"kind": kind, "n_rows": table.num_rows, **info})
    return url


def test_an_embeddings_batch_has_the_table_schema():
    batch = embeddings_batch({"tile_id": np.arange(3), "label": np.array(["a", "b", "a"])},
                             np.ones((3, 4), np.float64), "ckpt")
    assert batch.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert batch.column_names == ["tile_id", "label", "embedding", CHECKPOINT]
    assert carried_columns(["x", "label", "well", "other", "tile_id"]) == ["tile_id", "x", "label", "well"]


def test_an_embeddings_table_reads_with_dim_and_checkpoint(tmp_path):
    batch = embeddings_batch({"tile_id": np.arange(3)}, np.arange(12, dtype=np.float32).reshape(3, 4), "/ck/1")
    table = EmbeddingsTable.read(_publish(batch, tmp_path / "emb", "embeddings"))
    assert (table.dim, table.checkpoint, table.kind) == (4, "/ck/1", "embeddings")
    np.testing.assert_array_equal(table.matrix(), np.arange(12, dtype=np.float32).reshape(3, 4))


def test_a_spot_table_is_not_an_embeddings_table(tmp_path):
    spots = pa.table({"image_id": ["a", "b"], "n_tiles": [1, 2], "grid_rows": [1, 1], "grid_cols": [1, 2],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array([0.0, 1.0, 1.0, 0.0], pa.float32()), 2)})
    url = _publish(spots, tmp_path / "spots", "spot_table", spot_column="image_id")
    assert SpotTable.read(url).spot_column == "image_id"
    assert VectorTable.read(url).kind == "spot_table"  # what evaluate reads: either kind
    with pytest.raises(ValueError, match="is a spot table, not an embeddings table"):
        EmbeddingsTable.read(url)


def test_a_spot_table_without_its_columns_is_refused_on_write(tmp_path):
    table = pa.table({"image_id": ["a"], "embedding": pa.array([[1.0]], pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match="no column"):
        SpotTable(str(tmp_path), "spot_table", table, 1, "image_id").write(str(tmp_path))
    assert not (tmp_path / TABLE_FILE).exists()


def test_an_embedding_column_that_is_not_vectors_is_named():
    with pytest.raises(TypeError, match="must be a list of floats"):
        VectorTable("t", "embeddings", pa.table({"embedding": ["x"]}), 1)
    with pytest.raises(ValueError, match="different lengths"):
        embedding_matrix(pa.chunked_array([pa.array([[1.0], [1.0, 2.0]])]))
    with pytest.raises(ValueError, match="null rows"):
        embedding_matrix(pa.chunked_array([pa.array([[1.0], None])]))
