"""Tiny embeddings tables for the aggregation tests: spots of <= 5 x 5 tiles with holes, two classes."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sslray import storage
from sslray.aggregate import AggregateConfig
from sslray.config import from_dict

DIM = 12
TILE = 64


def tiles_of(n_spots: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """Spots of <= 5x5 tiles with holes; class a and b tiles come from two distributions."""
    rng = np.random.default_rng(seed)
    centres = {"a": rng.normal(size=DIM), "b": rng.normal(size=DIM)}
    cols: dict[str, list] = {k: [] for k in ("tile_id", "image_id", "x", "y", "label", "group", "split", "stain")}
    vectors = []
    for s in range(n_spots):
        label = "ab"[s % 2]
        h, w = rng.integers(2, 6, size=2)
        occupied = rng.random((h, w)) < 0.8
        occupied[0, 0] = True
        origin = rng.integers(0, 50, size=2) * TILE
        for r, c in zip(*np.nonzero(occupied)):
            cols["tile_id"].append(f"spot{s:02d}_{r}_{c}")
            cols["image_id"].append(f"spot{s:02d}")
            cols["x"].append(int(origin[0] + c * TILE))
            cols["y"].append(int(origin[1] + r * TILE))
            cols["label"].append(label)
            cols["group"].append(f"patient{s // 2}")
            cols["split"].append("test" if s >= n_spots - 4 else "train")
            cols["stain"].append(f"batch{rng.integers(3)}")  # varies within spots
            v = centres[label] + 0.7 * rng.normal(size=DIM)
            vectors.append(v / np.linalg.norm(v))
    out = {k: np.asarray(v) for k, v in cols.items()}
    out["embedding"] = np.asarray(vectors, dtype=np.float32)
    return out


def write_table(path, tiles) -> str:
    """An embeddings table as ``sslray embed`` writes it: parquet parts + ``_SUCCESS``."""
    n = len(tiles["tile_id"])
    table = pa.table({k: pa.array(v) for k, v in tiles.items() if k != "embedding"})
    flat = pa.array(tiles["embedding"].reshape(-1))
    table = table.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, DIM))
    table = table.append_column("checkpoint", pa.array(["ckpt"] * n).dictionary_encode())
    path.mkdir(parents=True)
    half = n // 2
    pq.write_table(table.slice(0, half), path / "part-0.parquet")
    pq.write_table(table.slice(half), path / "part-1.parquet")
    storage.mark_complete(str(path), {"n_rows": n})
    return str(path)


def aggregate_config(tmp_path, **overrides) -> AggregateConfig:
    params = {
        "embeddings": str(tmp_path / "emb"), "out": str(tmp_path / "spots"),
        "carry_columns": ["label", "group", "split", "stain", "slide_id"],
        "model": {"dim": 16, "depth": 2, "num_heads": 2},
        "dino": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "freeze_last_layer_epochs": 0},
        "views": {"global_window": 4, "local_window": 2, "n_local": 2},
        "optim": {"lr": 1e-3, "warmup_epochs": 0},
        "steps": 30, "batch_size": 8, "log_every": 10, "device": "cpu",
        "run_dir": str(tmp_path / "runs"), "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }
    params.update(overrides)
    return from_dict(AggregateConfig, params)


def config_obj(**overrides) -> AggregateConfig:
    """A config for tests that touch no table and no MLflow run."""
    return aggregate_config(Path("unused"), **overrides)
