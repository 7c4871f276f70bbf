"""The baseline every spot aggregator must beat: the mean of the spot's tile embeddings.

Mean pooling is what most MIL and profiling pipelines do first; ``sslray quickstart --method
spot_dino`` probes both, so the summary says whether the trained aggregator adds anything.
"""

from __future__ import annotations

import numpy as np

from sslray.aggregate.inputs import read_embeddings, table_grids
from sslray.aggregate.spot_rows import spot_table
from sslray.artifacts.spot_table import SpotTable
from sslray.artifacts.vector_table import embedding_matrix
from sslray.stage import publishing


def mean_pool_spots(embeddings: str, out: str, spot_column: str = "image_id",
                    carry_columns: tuple[str, ...] = ("label", "group", "split", "slide_id", "patient_id"),
                    overwrite: bool = False) -> str:
    """One L2-normalised mean embedding per spot, published like the aggregator's spot table."""
    table = read_embeddings(embeddings, spot_column, list(carry_columns))
    grids, _ = table_grids(table, spot_column)
    tiles = embedding_matrix(table.column("embedding"))
    means = np.stack([tiles[g.rows].mean(axis=0) for g in grids])
    means /= np.linalg.norm(means, axis=1, keepdims=True).clip(1e-12)
    carry = [c for c in carry_columns if c in table.column_names and c != spot_column]
    out_table, _ = spot_table(table, grids, spot_column, means, carry)
    with publishing(out, kind="spot_table", what="spot table", overwrite=overwrite) as publication:
        SpotTable(out, "spot_table", out_table, means.shape[1], spot_column).write(publication.staging)
        publication.info.update({"embeddings": embeddings, "spot_column": spot_column,
                                 "n_rows": out_table.num_rows, "pooling": "mean"})
    return out
