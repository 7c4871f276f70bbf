"""Which tiles and channels of a store a stage reads.

One store usually serves many runs: pretrain on the ``train`` split, embed everything,
train a nuclear model on DNA channels only, or use one magnification. A ``Selection`` says
that in the config (``data.where.split=train data.channels=[DAPI,CD3]``) instead of
writing another store. Errors name the config key and list what the store has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class SelectionError(ValueError):
    """The selection does not fit the store; the message names the key and what exists."""


@dataclass
class Selection:
    where: dict[str, Any] = field(default_factory=dict)  # manifest column -> value or list of values
    channels: list[str] | None = None  # channel names to keep, in this order
    min_tissue: float = 0.0  # keep tiles whose tissue/foreground fraction is at least this

    def __post_init__(self) -> None:
        if not 0 <= self.min_tissue <= 1:
            raise SelectionError(f"data.min_tissue must be in [0, 1], got {self.min_tissue}")
        if self.channels is not None and len(set(self.channels)) != len(self.channels):
            raise SelectionError(f"data.channels lists a channel twice: {self.channels}")

    @property
    def is_everything(self) -> bool:
        return not self.where and self.channels is None and self.min_tissue == 0

    def rows(self, manifest: pa.Table, url: str) -> np.ndarray:
        """Indices of the selected tiles (sorted, so reads stay sequential within shards)."""
        keep = np.ones(manifest.num_rows, dtype=bool)
        for column, wanted in self.where.items():
            keep &= _matches(manifest, column, wanted, url)
        if self.min_tissue > 0 and "tissue_fraction" in manifest.column_names:
            fraction = manifest.column("tissue_fraction").to_numpy(zero_copy_only=False).astype(float)
            keep &= np.nan_to_num(fraction, nan=0.0) >= self.min_tissue
        rows = np.flatnonzero(keep)
        if len(rows) == 0:
            raise SelectionError(f"tile store {url}: data.where={self.where} data.min_tissue={self.min_tissue} "
                                 "selects no tiles")
        return rows

    def channel_index(self, channels: list[str], url: str) -> list[int] | None:
        """Positions of the selected channels in the store, or None for all of them."""
        if self.channels is None or self.channels == channels:
            return None
        unknown = [c for c in self.channels if c not in channels]
        if unknown:
            raise SelectionError(f"data.channels: tile store {url} has no channel(s) {unknown}; it has {channels}")
        return [channels.index(c) for c in self.channels]


def _matches(manifest: pa.Table, column: str, wanted: Any, url: str) -> np.ndarray:
    if column not in manifest.column_names:
        raise SelectionError(f"data.where.{column}: tile store {url} has no manifest column {column!r}; "
                             f"it has {manifest.column_names}")
    values = manifest.column(column)
    wanted = list(wanted) if isinstance(wanted, list | tuple | set) else [wanted]
    mask = pc.fill_null(pc.is_in(*_comparable(values, wanted, column)), False).to_numpy(zero_copy_only=False)
    if not mask.any():
        present = sorted({str(v) for v in values.to_pylist() if v is not None})[:20]
        raise SelectionError(f"data.where.{column}={wanted}: no tile of {url} has that value; present: {present}")
    return mask


def _comparable(values, wanted: list, column: str):
    """Numbers compare as numbers (``40`` matches 40.0), everything else as text."""
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        try:
            return pc.cast(values, pa.float64()), pa.array([float(w) for w in wanted], pa.float64())
        except (TypeError, ValueError):
            raise SelectionError(f"data.where.{column}: {wanted} are not numbers, but the column is") from None
    return pc.cast(values, pa.string()), pa.array([str(w) for w in wanted], pa.string())
