"""One row per spot: the spot id, the columns constant within every spot, its size and embedding.

The rows of a spot table (``sslray.artifacts.spot_table``), built the same way for the trained
aggregator and for the mean-pooling baseline.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sslray.aggregate.grids import SpotGrid
from sslray.aggregate.inputs import plain

log = logging.getLogger(__name__)


def spot_table(table: pa.Table, grids: list[SpotGrid], spot_column: str, features: np.ndarray,
               carry: list[str]) -> tuple[pa.Table, list[str]]:
    """One row per spot: id, the carried columns that are constant within every spot, size, embedding."""
    first = np.array([g.rows[0] for g in grids], dtype=np.int64)
    spot_of_row = np.empty(table.num_rows, dtype=np.int64)
    for i, g in enumerate(grids):
        spot_of_row[g.rows] = i
    columns = {spot_column: plain(table.column(spot_column)).take(pa.array(first))}
    carried = []
    for name in carry:
        values = plain(table.column(name))
        if not _constant_within_spots(values, first[spot_of_row]):
            log.warning("column %r varies within some spots; it is not carried to the spot table", name)
            continue
        columns[name] = values.take(pa.array(first))
        carried.append(name)
    columns["n_tiles"] = pa.array([g.n_tiles for g in grids], pa.int32())
    columns["grid_rows"] = pa.array([g.cells.shape[0] for g in grids], pa.int32())
    columns["grid_cols"] = pa.array([g.cells.shape[1] for g in grids], pa.int32())
    flat = pa.array(features.astype(np.float32, copy=False).reshape(-1))
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, features.shape[1])
    return pa.table(columns), carried


def _constant_within_spots(values: pa.Array, first_row_of_spot: np.ndarray) -> bool:
    """Every row equals its spot's first row (two nulls count as equal)."""
    reference = values.take(pa.array(first_row_of_spot))
    same = pc.or_(pc.fill_null(pc.equal(values, reference), False),
                  pc.and_(pc.is_null(values), pc.is_null(reference)))
    return bool(pc.all(same).as_py())
