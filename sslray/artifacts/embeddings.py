"""The embeddings table (``kind: embeddings``): one row per tile, written by ``sslray embed``.

Columns (docs/data_contracts.md, "Embeddings table"): the manifest's identifying columns that
exist (``ID_COLUMNS``) and its grouping columns (``GROUP_COLUMNS``), ``embedding`` (a fixed-size
list of float32, L2-normalised by default) and ``checkpoint`` (the URL of the checkpoint it came
from, dictionary-encoded). Ray Data writes the parts; ``embeddings_batch`` is the schema of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sslray.artifacts.vector_table import EMBEDDING, VectorTable

ID_COLUMNS = ("tile_id", "source", "image_id", "x", "y", "level", "mpp", "tissue_fraction", "label", "group", "split")
GROUP_COLUMNS = ("slide_id", "patient_id", "spot_id", "plate", "well", "site", "batch", "perturbation", "magnification")
CHECKPOINT = "checkpoint"
KIND = "embeddings"


def carried_columns(manifest_columns: list[str]) -> list[str]:
    """The manifest columns an embeddings table carries, in table order."""
    return [c for c in (*ID_COLUMNS, *GROUP_COLUMNS) if c in manifest_columns]


def embeddings_batch(columns: dict[str, np.ndarray], features: np.ndarray, checkpoint: str) -> pa.Table:
    """Rows of an embeddings table: the carried ``columns``, ``embedding`` (float32) and ``checkpoint``."""
    n, dim = features.shape
    flat = pa.array(features.astype(np.float32, copy=False).reshape(-1))
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    table = table.append_column(EMBEDDING, pa.FixedSizeListArray.from_arrays(flat, dim))
    return table.append_column(CHECKPOINT, pa.array([checkpoint] * n, pa.string()).dictionary_encode())


@dataclass
class EmbeddingsTable(VectorTable):
    """A read embeddings table; ``checkpoint`` is the checkpoint its first row names (None if absent)."""

    checkpoint: str | None = None

    @classmethod
    def read(cls, url: str, columns: list[str] | None = None) -> EmbeddingsTable:  # type: ignore[override]
        base = VectorTable.read(url, (KIND,), columns)
        table = base.table
        checkpoint = None
        if CHECKPOINT in table.column_names and table.num_rows:
            checkpoint = str(table.column(CHECKPOINT)[0].as_py())
        return cls(base.url, base.kind, table, base.dim, checkpoint)
