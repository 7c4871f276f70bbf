"""Bags of tile embeddings for slide-level evaluation (MIL, survival): grouping, targets, checks.

A bag is every tile of one slide (or patient, or image): ``bag_column`` picks the column, by
default the first of ``BAG_COLUMNS`` the table fills. Targets come from a bags CSV
(``bag_id,label[,patient_id]`` or ``bag_id,time,event[,patient_id]``) or from table columns
that must be constant within a bag. Every check runs here, before Ray Tune starts, and names
the table, the column and the bag, so a grid of trials never fails on bad input
(docs/protocols.md, "MIL over bags of tiles").

The tiles of all bags sit in one float32 array with offsets, so the whole set goes to the
object store as one buffer that every trial maps without a copy. No Ray import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

BAG_COLUMNS = ("slide_id", "patient_id", "image_id")
PATIENT_COLUMN = "patient_id"
SPLIT_COLUMN = "split"
SPLITS = ("train", "val", "test")


@dataclass
class Bags:
    """Tiles grouped into bags: ``features[offsets[i]:offsets[i + 1]]`` are bag ``ids[i]``'s tiles."""

    ids: np.ndarray  # (n_bags,) str
    features: np.ndarray  # (n_tiles, dim) float32
    offsets: np.ndarray  # (n_bags + 1,) int64
    bag_column: str
    labels: np.ndarray | None = None  # (n_bags,) str class labels
    time: np.ndarray | None = None  # (n_bags,) float, survival
    event: np.ndarray | None = None  # (n_bags,) bool, survival
    patients: np.ndarray | None = None  # (n_bags,) str
    split: np.ndarray | None = None  # (n_bags,) "train" | "val" | "test"
    coords: np.ndarray | None = None  # (n_tiles, 2) x, y of every tile

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def tiles(self, i: int) -> np.ndarray:
        return self.features[self.offsets[i]:self.offsets[i + 1]]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist())) if self.labels is not None else []

    def targets(self) -> np.ndarray:
        """Class indices (classification) or (time, event) rows (survival), one per bag."""
        if self.labels is not None:
            index = {c: i for i, c in enumerate(self.classes)}
            return np.array([index[v] for v in self.labels], dtype=np.int64)
        return np.stack([self.time, self.event.astype(np.float64)], axis=1)


def resolve_bag_column(columns: list[str], table: pa.Table, requested: str | None, where: str) -> str:
    """``requested`` (which must exist), else the first of ``BAG_COLUMNS`` with a value in every row."""
    if requested:
        if requested not in columns:
            raise ValueError(f"{where}: bag_column {requested!r} is not a column (columns: {', '.join(columns)})")
        return requested
    for name in BAG_COLUMNS:
        if name in columns and table.column(name).null_count == 0:
            return name
    raise ValueError(f"{where}: no column groups the tiles into bags: none of {', '.join(BAG_COLUMNS)} is filled "
                     "in every row; set bag_column=<column>")


def group_tiles(table: pa.Table, features: np.ndarray, bag_column: str, where: str) -> tuple[np.ndarray, np.ndarray,
                                                                                            np.ndarray]:
    """(bag ids sorted, tile order that puts each bag's tiles together, offsets)."""
    keys = np.asarray(table.column(bag_column).to_pylist(), dtype=object)
    if any(k is None for k in keys):
        raise ValueError(f"{where}: column {bag_column!r} is empty in {sum(k is None for k in keys)} rows")
    keys = keys.astype(str)
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        named = sorted(set(keys[bad].tolist()))
        raise ValueError(f"{where}: {int(bad.sum())} tiles have NaN or infinite embeddings, in bag(s) "
                         f"{_few(named)} of column {bag_column!r}; re-embed them or drop those tiles")
    order = np.argsort(keys, kind="stable")
    ids, starts = np.unique(keys[order], return_index=True)
    return ids, order, np.append(starts, len(keys)).astype(np.int64)


def per_bag_constant(values: np.ndarray, order: np.ndarray, offsets: np.ndarray, ids: np.ndarray, column: str,
                     where: str) -> np.ndarray:
    """The one value each bag holds in ``column``; a bag with two values is an error naming it."""
    ordered = values[order]
    out = np.empty(len(ids), dtype=object)
    for i, bag in enumerate(ids):
        seen = {v for v in ordered[offsets[i]:offsets[i + 1]].tolist() if v is not None and v == v}
        if len(seen) > 1:
            raise ValueError(f"{where}: bag {str(bag)!r} has conflicting values in column {column!r}: "
                             f"{_few(sorted(map(str, seen)))}; a bag has one {column}")
        out[i] = seen.pop() if seen else None
    return out


def read_bags_csv(path: str, survival: bool) -> pd.DataFrame:
    """The bags table: ``bag_id`` plus ``label`` (or ``time`` and ``event``), optional ``patient_id``/``split``."""
    from sslray import storage

    import io

    frame = pd.read_csv(io.BytesIO(storage.read_bytes(path)), dtype={"bag_id": str, "patient_id": str})
    needed = ["bag_id", "time", "event"] if survival else ["bag_id", "label"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"bags CSV {path}: missing column(s) {missing}; expected {','.join(needed)}"
                         f"[,{PATIENT_COLUMN}] (columns: {', '.join(frame.columns)})")
    repeated = frame["bag_id"][frame["bag_id"].duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"bags CSV {path}: bag(s) {_few(repeated)} are listed more than once")
    return frame.set_index("bag_id")


def attach_csv(ids: np.ndarray, frame: pd.DataFrame, path: str) -> tuple[np.ndarray, pd.DataFrame]:
    """(which bags the CSV labels, its rows in bag order); bags the CSV names but the table lacks are an error."""
    unknown = sorted(set(frame.index) - set(ids.tolist()))
    if unknown:
        raise ValueError(f"bags CSV {path}: {len(unknown)} bag(s) have no tiles in the embeddings table: "
                         f"{_few(unknown)} (check bag_column and the ids)")
    keep = np.isin(ids, frame.index.to_numpy())
    if not keep.all():
        log.warning("bags CSV %s labels %d of %d bags; the other %d (e.g. %s) are left out", path, keep.sum(),
                    len(ids), (~keep).sum(), ", ".join(ids[~keep][:3]))
    return keep, frame.loc[ids[keep]]


def survival_targets(time: np.ndarray, event: np.ndarray, ids: np.ndarray, where: str) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """Times as float (finite, >= 0) and events as bool (0/1), each bad value named by its bag."""
    times = pd.to_numeric(pd.Series(time), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(times) | (times < 0)
    if bad.any():
        raise ValueError(f"{where}: bag(s) {_few(ids[bad].tolist())} have a missing, negative or non-numeric time")
    events = pd.to_numeric(pd.Series(event), errors="coerce").to_numpy(np.float64)
    bad = ~np.isin(events, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"{where}: bag(s) {_few(ids[bad].tolist())} have an event that is not 0 or 1")
    if not events.any():
        raise ValueError(f"{where}: no bag has an event (event = 1); survival needs observed events")
    return times, events.astype(bool)


def check_labels(labels: np.ndarray, ids: np.ndarray, column: str, where: str) -> np.ndarray:
    missing = np.array([v is None or v != v for v in labels])
    if missing.any():
        raise ValueError(f"{where}: bag(s) {_few(ids[missing].tolist())} have no value in {column!r}")
    labels = labels.astype(str)
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ValueError(f"{where}: column {column!r} has a single class ({', '.join(classes)}) over "
                         f"{len(labels)} bags; classification needs at least 2")
    return labels


def check_split(split: np.ndarray, ids: np.ndarray, where: str) -> np.ndarray:
    bad = np.array([v not in SPLITS for v in split])
    if bad.any():
        raise ValueError(f"{where}: column {SPLIT_COLUMN!r} must be one of {', '.join(SPLITS)} for every bag; "
                         f"bag(s) {_few(ids[bad].tolist())} have {_few(sorted(set(map(str, split[bad]))))}")
    for name in ("train", "test"):
        if name not in split:
            raise ValueError(f"{where}: column {SPLIT_COLUMN!r} names no {name!r} bag")
    return split.astype(str)


def _few(items: list, limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
