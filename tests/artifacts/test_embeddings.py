"""The embeddings table: the schema of each part ``sslray embed`` writes, and reading it back."""

import numpy as np
import pyarrow as pa

from sslray.artifacts.embeddings import CHECKPOINT, EmbeddingsTable, carried_columns, embeddings_batch
from tests.artifacts.tables import publish_table


def test_an_embeddings_batch_has_the_table_schema():
    batch = embeddings_batch({"tile_id": np.arange(3), "label": np.array(["a", "b", "a"])},
                             np.ones((3, 4), np.float64), "ckpt")
    assert batch.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert batch.column_names == ["tile_id", "label", "embedding", CHECKPOINT]
    assert pa.types.is_dictionary(batch.schema.field(CHECKPOINT).type)  # one URL, stored once per part
    assert carried_columns(["x", "label", "well", "other", "tile_id"]) == ["tile_id", "x", "label", "well"]


def test_an_embeddings_table_reads_with_dim_and_checkpoint(tmp_path):
    batch = embeddings_batch({"tile_id": np.arange(3)}, np.arange(12, dtype=np.float32).reshape(3, 4), "/ck/1")
    table = EmbeddingsTable.read(publish_table(batch, tmp_path / "emb", "embeddings"))
    assert (table.dim, table.checkpoint, table.kind) == (4, "/ck/1", "embeddings")
    np.testing.assert_array_equal(table.matrix(), np.arange(12, dtype=np.float32).reshape(3, 4))


def test_a_table_from_another_writer_has_no_checkpoint(tmp_path):
    batch = embeddings_batch({"tile_id": np.arange(2)}, np.ones((2, 3), np.float32), "/ck").drop_columns([CHECKPOINT])
    assert EmbeddingsTable.read(publish_table(batch, tmp_path / "emb", "embeddings")).checkpoint is None
