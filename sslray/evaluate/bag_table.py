"""From an embeddings table (and optionally a bags CSV) to checked ``Bags``.

``--embeddings`` is a published embeddings/spot table or any parquet file or folder with an
``embedding`` column; the bags' targets come from the CSV when given, else from the table's
columns (docs/protocols.md, "MIL over bags of tiles"). No Ray import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sslray.evaluate.bags import (PATIENT_COLUMN, SPLIT_COLUMN, Bags, attach_csv, check_labels, check_split,
                                  group_tiles, per_bag_constant, read_bags_csv, resolve_bag_column,
                                  survival_targets)


@dataclass
class BagSource:
    """Where the bags and their targets come from (the protocol config's keys of the same names)."""

    embeddings: str
    bags_csv: str | None = None
    bag_column: str | None = None
    label_column: str = "label"
    time_column: str = "time"
    event_column: str = "event"
    survival: bool = False


def read_vectors(url: str) -> tuple[pa.Table, np.ndarray]:
    """(table without the vectors, (n, dim) float32 vectors) from a published table, or from any
    parquet file or folder with an ``embedding`` column that no sslray stage is still writing."""
    from sslray.artifacts.kinds import PROBE_TABLES
    from sslray.artifacts.vector_table import EMBEDDING, VectorTable

    vectors = VectorTable.read_any(url, PROBE_TABLES)  # names a tile store, an unfinished table or a typo as such
    return vectors.table.drop_columns([EMBEDDING]), vectors.matrix()


def load_bags(source: BagSource) -> Bags:
    table, features = read_vectors(source.embeddings)
    return build_bags(table, features, source)


def build_bags(table: pa.Table, features: np.ndarray, source: BagSource) -> Bags:
    """Group ``table``'s tiles into bags with their targets; every bad input is named here."""
    where = f"embeddings table {source.embeddings}"
    columns = table.column_names
    bag_column = resolve_bag_column(columns, table, source.bag_column, where)
    ids, order, offsets = group_tiles(table, features, bag_column, where)

    def constant(column: str) -> np.ndarray:
        values = np.asarray(table.column(column).to_pylist(), dtype=object)
        return per_bag_constant(values, order, offsets, ids, column, where)

    fields: dict[str, np.ndarray | None] = {}
    if source.bags_csv:
        keep, rows = attach_csv(ids, read_bags_csv(source.bags_csv, source.survival), source.bags_csv)
        where = f"bags CSV {source.bags_csv}"
        if source.survival:
            fields.update(time=rows["time"].to_numpy(), event=rows["event"].to_numpy())
        else:
            fields["labels"] = rows["label"].to_numpy(dtype=object)
        for name, column in (("patients", PATIENT_COLUMN), ("split", SPLIT_COLUMN)):
            if column in rows.columns:
                fields[name] = rows[column].to_numpy(dtype=object)
            elif column in columns:
                fields[name] = constant(column)[keep]
    else:
        keep = np.ones(len(ids), dtype=bool)
        needed = [source.time_column, source.event_column] if source.survival else [source.label_column]
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ValueError(f"{where}: no column(s) {missing} for the bags' targets and no --bags CSV "
                             f"(columns: {', '.join(columns)})")
        if source.survival:
            fields.update(time=constant(source.time_column), event=constant(source.event_column))
        else:
            labels = constant(source.label_column)
            keep = np.array([v is not None for v in labels])  # unlabelled bags are not evaluated
            fields["labels"] = labels[keep]
        for name, column in (("patients", PATIENT_COLUMN), ("split", SPLIT_COLUMN)):
            if column in columns and column != bag_column:
                fields[name] = constant(column)[keep]
    return _assemble(features, table, order, offsets, ids, keep, bag_column, fields, source, where)


def _assemble(features, table, order, offsets, ids, keep, bag_column, fields, source, where) -> Bags:
    kept = ids[keep]
    rows = np.concatenate([order[offsets[i]:offsets[i + 1]] for i in np.flatnonzero(keep)]) if keep.any() \
        else np.zeros(0, np.int64)
    sizes = np.diff(offsets)[keep]
    bags = Bags(ids=kept, features=np.ascontiguousarray(features[rows], dtype=np.float32),
                offsets=np.append(0, np.cumsum(sizes)).astype(np.int64), bag_column=bag_column)
    if "x" in table.column_names and "y" in table.column_names:
        xy = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in ("x", "y")], axis=1)
        bags.coords = xy[rows].astype(np.float64)
    if source.survival:
        bags.time, bags.event = survival_targets(fields["time"], fields["event"], kept, where)
    else:
        bags.labels = check_labels(fields["labels"], kept, source.label_column, where)
    patients = fields.get("patients")
    if patients is not None:
        empty = np.array([p is None or p != p for p in patients])
        bags.patients = np.where(empty, kept, patients).astype(str)  # a bag without a patient is its own
    if fields.get("split") is not None:
        bags.split = check_split(fields["split"], kept, where)
    return bags
