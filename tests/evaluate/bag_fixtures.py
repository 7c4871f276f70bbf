"""Tiny tables of tiles for the bag-level evaluation tests: a few slides whose label hangs on a
minority of their tiles, as a tumour focus does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def tile_table(n_bags: int = 24, dim: int = 8, seed: int = 0, patients: bool = True,
               survival: bool = False) -> tuple[pa.Table, np.ndarray]:
    """(table of tiles with slide_id/patient_id/label (or time/event) and x/y, their features).

    Positive slides hold 2 tiles shifted along the first axis among 6-12 noise tiles; two slides
    per patient share the patient's label (for survival: its time, shorter when positive)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"slide_id": [], "patient_id": [], "label": [], "time": [], "event": [], "x": [], "y": []}
    features = []
    for b in range(n_bags):
        positive = (b // 2) % 2 == 1
        n = int(rng.integers(6, 13))
        tiles = rng.normal(size=(n, dim))
        if positive:
            tiles[:2, 0] += 6.0
        features.append(tiles)
        time = float(rng.uniform(1, 5) if positive else rng.uniform(6, 10))
        for i in range(n):
            rows["slide_id"].append(f"s{b:02d}")
            rows["patient_id"].append(f"p{b // 2:02d}" if patients else None)
            rows["label"].append("tumour" if positive else "normal")
            rows["time"].append(time)
            rows["event"].append(int(b % 3 != 0))
            rows["x"].append(i % 4)
            rows["y"].append(i // 4)
    columns = {k: v for k, v in rows.items() if (patients or k != "patient_id")}
    if not survival:
        columns = {k: v for k, v in columns.items() if k not in ("time", "event")}
    return pa.table(columns), np.concatenate(features).astype(np.float32)


def write_table(path, table: pa.Table, features: np.ndarray) -> str:
    """A plain parquet folder (no sslray marker) with an ``embedding`` column."""
    path.mkdir(parents=True, exist_ok=True)
    flat = pa.array(features.reshape(-1).astype(np.float32))
    full = table.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, features.shape[1]))
    pq.write_table(full, path / "part-0.parquet")
    return str(path)
