"""The spot table (``kind: spot_table``): one row per spot, written by ``sslray aggregate``.

A spot is any group of tiles sharing ``spot_column`` (a TMA spot, a field, a slide region).
Columns (docs/data_contracts.md, "Spot table"): the spot id, the carried columns that are constant
within every spot, ``n_tiles``, ``grid_rows``, ``grid_cols`` and ``embedding`` (fixed-size list of
float32, L2-normalised), in one parquet file ``part-00000.parquet``. A trained aggregator keeps
its checkpoint under ``_aggregator/`` (the underscore makes pyarrow and Ray Data skip it); the mean
pooling baseline has none. ``_SUCCESS`` records ``spot_column``.

A later table of one vector per bag (slide- or patient-level MIL) follows the same pattern: its
own kind in ``kinds``, its own module here subclassing ``VectorTable``, its columns listed in
docs/data_contracts.md.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow.parquet as pq

from sslray import storage
from sslray.artifacts.vector_table import VectorTable

TABLE_FILE = "part-00000.parquet"
AGGREGATOR_DIR = "_aggregator"  # underscore: pyarrow and Ray Data skip it when reading the table
SPOT_COLUMNS = ("n_tiles", "grid_rows", "grid_cols")
KIND = "spot_table"


@dataclass
class SpotTable(VectorTable):
    """A spot table: ``spot_column`` names the column whose values identify the spots."""

    spot_column: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        missing = [c for c in (*SPOT_COLUMNS, *([self.spot_column] if self.spot_column else []))
                   if c not in self.table.column_names]
        if missing:
            raise ValueError(f"spot table {self.url}: no column(s) {missing} (columns: "
                             f"{', '.join(self.table.column_names)})")

    @classmethod
    def read(cls, url: str, columns: list[str] | None = None) -> SpotTable:  # type: ignore[override]
        base = VectorTable.read(url, (KIND,), columns)
        try:
            summary = storage.read_json(storage.join(url, storage.SUCCESS_MARKER))
        except ValueError:  # an empty marker: published before the summary was recorded
            summary = None
        spot_column = summary.get("spot_column") if isinstance(summary, dict) else None
        return cls(base.url, base.kind, base.table, base.dim, spot_column)

    def write(self, directory: str) -> None:
        """Write the table file into ``directory`` (a staging area the stage publishes afterwards)."""
        buffer = io.BytesIO()
        pq.write_table(self.table, buffer)
        storage.write_bytes(storage.join(directory, TABLE_FILE), buffer.getvalue())
