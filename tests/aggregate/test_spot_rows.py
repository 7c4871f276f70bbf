"""Spot rows: one per spot, carrying only the columns constant within every spot."""

import numpy as np
import pyarrow as pa

from sslray.aggregate.grids import build_grids
from sslray.aggregate.spot_rows import spot_table
from tests.aggregate.tables import tiles_of


def test_columns_varying_within_a_spot_are_not_carried():
    tiles = tiles_of(4)
    table = pa.table({"image_id": tiles["image_id"], "label": tiles["label"], "stain": tiles["stain"],
                      "split": pa.array([None] * len(tiles["x"]), pa.string())})
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    out, carried = spot_table(table, grids, "image_id", np.eye(4, 3, dtype=np.float32), ["label", "stain", "split"])
    assert carried == ["label", "split"]  # all-null within a spot counts as constant
    assert out.column("label").to_pylist() == ["a", "b", "a", "b"] and out.column("split").null_count == 4
    assert out.column("n_tiles").to_pylist() == [g.n_tiles for g in grids]
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 3)
