"""Mean pooling, the baseline the spot aggregator is compared with."""

import numpy as np
import pyarrow.dataset as pads

from sslray.aggregate.baseline import mean_pool_spots
from sslray.artifacts.vector_table import embedding_matrix
from tests.aggregate.tables import tiles_of, write_table


def test_mean_pooling_gives_one_normalised_mean_per_spot(tmp_path):
    tiles = tiles_of(n_spots=6)
    url = mean_pool_spots(write_table(tmp_path / "tiles", tiles), str(tmp_path / "spots"))
    table = pads.dataset(url, format="parquet").to_table()
    assert table.num_rows == 6 and {"label", "n_tiles", "embedding"} <= set(table.column_names)
    spot = table.column("image_id")[0].as_py()
    rows = np.asarray(tiles["image_id"]) == spot
    expected = np.asarray(tiles["embedding"])[rows].mean(axis=0)
    np.testing.assert_allclose(embedding_matrix(table.column("embedding"))[0], expected / np.linalg.norm(expected),
                               rtol=1e-5)
