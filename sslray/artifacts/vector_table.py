"""A table of one vector per row: the shape every embeddings and spot table shares.

Contract (docs/data_contracts.md): parquet part files under a directory published with
``_SUCCESS``; an ``embedding`` column holding one fixed-size list of float32 per row (plain lists
of equal length from other writers still read) beside identifying and grouping columns.
``VectorTable.read`` checks the kind and the column once, so a probe or an aggregator never fails
deep in pyarrow on a table that is not one. ``VectorTable.read_any`` also takes features other
tools wrote: any parquet file or folder with an ``embedding`` column that no sslray stage is
still writing (the evaluation protocols read through it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from sslray import storage
from sslray.artifacts.kinds import PROBE_TABLES, require_artifact

EMBEDDING = "embedding"
PLAIN = "parquet"  # the kind of a table no sslray stage wrote


@dataclass
class VectorTable:
    """A read table of vectors: its URL and kind, the pyarrow table and the vector width."""

    url: str
    kind: str
    table: pa.Table
    dim: int

    def __post_init__(self) -> None:
        if EMBEDDING not in self.table.column_names:
            raise ValueError(f"{self.url}: no {EMBEDDING!r} column (columns: {', '.join(self.table.column_names)})")
        check_embedding_type(self.table.schema.field(EMBEDDING).type, self.url)
        if self.dim < 1:
            raise ValueError(f"{self.url}: column {EMBEDDING!r} holds vectors of width {self.dim}")

    @classmethod
    def read(cls, url: str, kinds: tuple[str, ...] = PROBE_TABLES, columns: list[str] | None = None) -> VectorTable:
        """The finished table at ``url`` (one of ``kinds``), with ``columns`` (default: all) and the embedding."""
        require_artifact(url, kinds)  # names a tile store, image folder or typo as such
        table = read_parquet_dir(url, None if columns is None else list(dict.fromkeys([*columns, EMBEDDING])))
        return cls(url, storage.artifact_kind(url) or kinds[0], table, vector_width(table, url))

    @classmethod
    def read_any(cls, url: str, kinds: tuple[str, ...] = PROBE_TABLES, columns: list[str] | None = None
                 ) -> VectorTable:
        """A finished table of ``kinds``, or a plain parquet file/folder (kind ``parquet``): one without
        sslray's markers, so an sslray output still being written is never read as finished."""
        if not is_plain_parquet(url):
            return cls.read(url, kinds, columns)
        table = read_parquet_dir(url, None if columns is None else list(dict.fromkeys([*columns, EMBEDDING])))
        if EMBEDDING not in table.column_names:
            raise ValueError(f"{url}: no {EMBEDDING!r} column (columns: {', '.join(table.column_names)})")
        return cls(url, PLAIN, table, vector_width(table, url))

    def matrix(self) -> np.ndarray:
        """The vectors as an (n, dim) float32 array (a writable copy)."""
        return embedding_matrix(self.table.column(EMBEDDING))


def is_plain_parquet(url: str) -> bool:
    """A parquet file, or a folder of parquet parts, with neither ``_SUCCESS`` nor ``_SSLRAY_WRITING``."""
    if storage.artifact_kind(url) is not None or storage.exists(storage.join(url, storage.WRITING_MARKER)):
        return False
    fs, path = storage.filesystem(url)
    if fs.isfile(path):
        return path.endswith(".parquet")
    return (fs.isdir(path) and not fs.exists(f"{path}/{storage.SUCCESS_MARKER}")
            and any(p.endswith(".parquet") for p in fs.ls(path, detail=False)))


def read_parquet_dir(url: str, columns: list[str] | None = None) -> pa.Table:
    """All parquet parts under ``url`` as one table; a missing column is a KeyError listing the columns."""
    fs, path = storage.filesystem(url)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    missing = [c for c in columns or [] if c not in dataset.schema.names]
    if missing:
        raise KeyError(f"{url} lacks column(s) {missing}; available columns: {', '.join(dataset.schema.names)}")
    return dataset.to_table(columns=columns)


def check_embedding_type(kind: pa.DataType, url: str) -> None:
    """The ``embedding`` column must be a (fixed-size) list of floats."""
    is_list = pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)
    if not is_list or not pa.types.is_floating(kind.value_type):
        raise TypeError(f"{url}: column {EMBEDDING!r} must be a list of floats, got {kind}")


def vector_width(table: pa.Table, url: str) -> int:
    """The width of the table's vectors (0 for an empty table of variable-size lists)."""
    kind = table.schema.field(EMBEDDING).type
    check_embedding_type(kind, url)
    if pa.types.is_fixed_size_list(kind):
        return int(kind.list_size)
    column = table.column(EMBEDDING)
    return int(pc.list_value_length(column.chunk(0))[0].as_py()) if table.num_rows and column.num_chunks else 0


def embedding_matrix(column: pa.ChunkedArray) -> np.ndarray:
    """A (fixed-size) list column of vectors -> (n, D) float32; nulls and ragged rows are refused."""
    arr = column.combine_chunks()
    if arr.null_count:
        raise ValueError(f"column {EMBEDDING!r} has {arr.null_count} null rows")
    if pa.types.is_fixed_size_list(arr.type):
        dim = arr.type.list_size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if len(set(lengths.tolist())) > 1:
            raise ValueError(f"column {EMBEDDING!r} holds vectors of different lengths {sorted(set(lengths.tolist()))[:5]}")
        dim = int(lengths[0]) if len(lengths) else 0
    else:
        raise TypeError(f"column {EMBEDDING!r} must be a list of floats, got {arr.type}")
    values = np.array(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)  # own, writable copy
    return values.reshape(len(arr), dim)
