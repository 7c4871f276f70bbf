"""The aggregation's input: the columns it needs from a published embeddings table, and the
spot grids they make.

The table must be complete (``_SUCCESS``) and of kind ``embeddings``; it needs the spot column,
``embedding`` and the tile positions ``x``/``y`` (docs/data_contracts.md, "Embeddings table").
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from sslray import storage
from sslray.aggregate.grids import SpotGrid, build_grids
from sslray.artifacts import require_artifact

REQUIRED_COLUMNS = ("embedding", "x", "y")


def read_embeddings(url: str, spot_column: str, carry_columns: list[str]) -> pa.Table:
    """The columns the aggregation needs from a complete embeddings table, checked."""
    require_artifact(url, ("embeddings",))  # names a tile store, spot table or typo as such
    fs, path = storage.filesystem(url)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    available = dataset.schema.names
    if spot_column not in available:
        raise KeyError(f"spot_column {spot_column!r} is not a column of {url}; available columns: {', '.join(available)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in available]
    if missing:
        raise KeyError(f"{url} lacks column(s) {missing} needed to build spot grids; available columns: "
                       f"{', '.join(available)}")
    carry = [c for c in carry_columns if c in available and c != spot_column]
    table = dataset.to_table(columns=[spot_column, *REQUIRED_COLUMNS, *carry])
    if table.num_rows == 0:
        raise ValueError(f"embeddings table {url} has no rows")
    return table


def plain(column: pa.ChunkedArray) -> pa.Array:
    """One array with dictionary encoding undone (``sslray embed`` may dictionary-encode strings)."""
    arr = column.combine_chunks()
    return arr.cast(arr.type.value_type) if pa.types.is_dictionary(arr.type) else arr


def table_grids(table: pa.Table, spot_column: str, tile_size: float | None = None
                ) -> tuple[list[SpotGrid], tuple[float, float]]:
    """Every spot's grid of table rows, and the grid step; a null spot id is refused."""
    nulls = table.column(spot_column).null_count
    if nulls:
        raise ValueError(f"spot_column {spot_column!r} has {nulls} null values")
    spot_ids = plain(table.column(spot_column)).to_numpy(zero_copy_only=False)
    return build_grids(spot_ids, np.asarray(table.column("x")), np.asarray(table.column("y")), tile_size)
