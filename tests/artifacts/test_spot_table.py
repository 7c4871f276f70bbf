"""The spot table: its own kind, its required columns, the spot column recorded in ``_SUCCESS``."""

import pyarrow as pa
import pytest

from sslray import storage
from sslray.artifacts.embeddings import EmbeddingsTable
from sslray.artifacts.spot_table import TABLE_FILE, SpotTable
from sslray.artifacts.vector_table import VectorTable
from tests.artifacts.tables import publish_table, vectors

SPOTS = pa.table({"image_id": ["a", "b"], "n_tiles": [1, 2], "grid_rows": [1, 1], "grid_cols": [1, 2],
                  "embedding": vectors([[0.0, 1.0], [1.0, 0.0]])})


def test_a_spot_table_is_not_an_embeddings_table(tmp_path):
    url = publish_table(SPOTS, tmp_path / "spots", "spot_table", spot_column="image_id")
    assert SpotTable.read(url).spot_column == "image_id"
    assert VectorTable.read(url).kind == "spot_table"  # what evaluate reads: either kind
    with pytest.raises(ValueError, match="is a spot table, not an embeddings table"):
        EmbeddingsTable.read(url)


def test_a_spot_table_without_its_columns_is_refused_on_write(tmp_path):
    table = pa.table({"image_id": ["a"], "embedding": pa.array([[1.0]], pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match="no column"):
        SpotTable(str(tmp_path), "spot_table", table, 1, "image_id").write(str(tmp_path))
    assert not (tmp_path / TABLE_FILE).exists()


def test_a_written_table_reads_back_and_an_old_empty_marker_means_no_spot_column(tmp_path):
    staging = storage.begin_output(str(tmp_path / "spots"), kind="spot_table")
    SpotTable(str(tmp_path / "spots"), "spot_table", SPOTS, 2, "image_id").write(staging)
    storage.publish_output(staging, str(tmp_path / "spots"), {})
    (tmp_path / "spots" / storage.SUCCESS_MARKER).write_text("")  # published before summaries were recorded
    (tmp_path / "spots" / "_aggregator").mkdir()  # what told such a table from an embeddings table
    table = SpotTable.read(str(tmp_path / "spots"))
    assert table.table.equals(SPOTS) and table.spot_column is None and table.dim == 2
