"""Spot DINO: views, a decreasing loss, and ``run_aggregate`` end to end on a written table."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from sslray import storage
from sslray.aggregate import AggregateConfig, build_grids, embed_spots, load_aggregator, run_aggregate, train_aggregator
from sslray.aggregate.train import make_views, spot_table
from sslray.config import ConfigError, from_dict

DIM = 12
TILE = 64


def _tiles(n_spots: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
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


def _write_table(path, tiles) -> str:
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


def _config(tmp_path, **overrides) -> AggregateConfig:
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


def test_views_are_batches_over_spots_of_bounded_windows():
    tiles = _tiles(6)
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    cfg = _config_obj()
    views = make_views(grids, cfg.views, np.random.default_rng(0))
    assert views.global_rows.shape[0] == 2 * 6 and views.local_rows.shape[0] == 2 * 6
    assert views.global_mask.shape == views.global_rows.shape
    assert views.global_mask.sum(1).min() >= 1 and views.global_mask.sum(1).max() <= 16  # 4x4 window
    assert views.local_mask.sum(1).max() <= 4  # 2x2 window
    for i, g in enumerate(grids):  # view rows belong to their own spot
        own = set(g.rows.tolist())
        assert set(views.global_rows[i][views.global_mask[i]].tolist()) <= own
        assert set(views.local_rows[6 + i][views.local_mask[6 + i]].tolist()) <= own


def _config_obj(**overrides) -> AggregateConfig:
    """A config for in-memory training (no table, no MLflow run is touched)."""
    return _config(Path("unused"), **overrides)


def test_loss_decreases_on_a_fixed_table():
    """From settled centres the student learns to match the teacher.

    At initialisation a random encoder maps every spot to nearly the same output, so before
    centring the targets are one shared peak the identical student matches trivially: the
    loss starts low and *rises* while the centre (momentum 0.5 here, to settle in a few
    steps) spreads the targets. From there on it must fall.
    """
    tiles = _tiles(16)
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    cfg = _config_obj(steps=40, dino={"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
                                      "freeze_last_layer_epochs": 0, "center_momentum": 0.5})
    seen = []
    model, losses = train_aggregator(torch.from_numpy(tiles["embedding"]), grids, cfg, "cpu",
                                     lambda step, m: seen.append((step, m)))
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[2:7]) - 0.3
    assert [s for s, _ in seen] == list(range(40))
    assert {"loss", "lr", "teacher_temp", "teacher_momentum"} <= set(seen[1][1])
    assert {"feature_std", "effective_rank"} <= set(seen[0][1]) and "feature_std" not in seen[1][1]
    # the teacher moved by EMA only: it differs from its initial copy and from the student, and has no grads
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert not torch.allclose(model.teacher.token_embed.weight, model.student.token_embed.weight)


def test_run_aggregate_end_to_end(tmp_path):
    import mlflow

    tiles = _tiles(24)
    _write_table(tmp_path / "emb", tiles)
    cfg = _config(tmp_path)
    url = run_aggregate(cfg)
    assert url == cfg.out and storage.is_complete(url)
    info = storage.read_json(storage.join(url, storage.SUCCESS_MARKER))
    assert info["n_rows"] == 24 and info["dim"] == 16 and info["carried_columns"] == ["label", "group", "split"]

    table = pads.dataset(url, format="parquet").to_table()  # the _aggregator directory is skipped
    assert table.num_rows == 24
    assert table.column_names == ["image_id", "label", "group", "split", "n_tiles", "grid_rows", "grid_cols",
                                  "embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 16)
    emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(24, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    rows = table.to_pylist()
    for row in rows:
        own = tiles["image_id"] == row["image_id"]
        assert row["n_tiles"] == own.sum() and row["label"] == tiles["label"][own][0]
        assert row["group"] == tiles["group"][own][0]
    # two tile distributions -> spots of a class are closer to each other than to the other class
    labels = np.array([r["label"] for r in rows])
    sim = emb @ emb.T
    same = (labels[:, None] == labels[None]) & ~np.eye(24, dtype=bool)
    assert sim[same].mean() > sim[labels[:, None] != labels[None]].mean()

    # the saved teacher reproduces the published embeddings
    encoder, meta = load_aggregator(url)
    assert meta["in_dim"] == DIM and meta["spot_column"] == "image_id" and meta["grid_step"] == [TILE, TILE]
    spot_rows = {s: np.flatnonzero(tiles["image_id"] == s) for s in np.unique(tiles["image_id"])}
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    again = embed_spots(encoder, torch.from_numpy(tiles["embedding"]), grids)
    np.testing.assert_allclose(again, emb, atol=1e-5)
    assert sorted(spot_rows) == [r["image_id"] for r in rows]

    client = mlflow.MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sslray").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["sslray.embeddings"] == cfg.embeddings
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 30
    assert "spots_effective_rank" in run.data.metrics and run.data.params["spot_column"] == "image_id"

    with pytest.raises(FileExistsError, match="already exists"):
        run_aggregate(cfg)


def test_bad_config_keys_and_values_are_named():
    with pytest.raises(ConfigError, match="unknown config key 'spot_col'"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "spot_col": "image_id"})
    with pytest.raises(ConfigError, match="unknown config key views.'n_locals'"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "views": {"n_locals": 2}})
    with pytest.raises(ConfigError, match="embeddings is required"):
        from_dict(AggregateConfig, {"out": "o"})
    with pytest.raises(ConfigError, match="model.dim"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "model": {"dim": 10, "num_heads": 4}})
    with pytest.raises(ConfigError, match="views.token_dropout"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "views": {"token_dropout": 1.0}})
    with pytest.raises(ConfigError, match="device must be"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "device": "tpu"})


def test_missing_spot_column_lists_the_available_ones(tmp_path):
    _write_table(tmp_path / "emb", _tiles(4))
    with pytest.raises(KeyError, match=r"spot_column 'spot_id' is not a column of .*available columns: tile_id, "
                                        r"image_id, x, y"):
        run_aggregate(_config(tmp_path, spot_column="spot_id"))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()  # failed before any run


def test_incomplete_table_and_missing_positions_are_refused(tmp_path):
    tiles = _tiles(4)
    _write_table(tmp_path / "emb", tiles)
    (tmp_path / "emb" / storage.SUCCESS_MARKER).unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        run_aggregate(_config(tmp_path))
    no_xy = {k: v for k, v in tiles.items() if k not in ("x", "y")}
    _write_table(tmp_path / "emb2", no_xy)
    with pytest.raises(KeyError, match=r"lacks column\(s\) \['x', 'y'\]"):
        run_aggregate(_config(tmp_path, embeddings=str(tmp_path / "emb2")))


def test_columns_varying_within_a_spot_are_not_carried():
    tiles = _tiles(4)
    table = pa.table({"image_id": tiles["image_id"], "label": tiles["label"], "stain": tiles["stain"],
                      "split": pa.array([None] * len(tiles["x"]), pa.string())})
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    out, carried = spot_table(table, grids, "image_id", np.eye(4, 3, dtype=np.float32), ["label", "stain", "split"])
    assert carried == ["label", "split"]  # all-null within a spot counts as constant
    assert out.column("label").to_pylist() == ["a", "b", "a", "b"] and out.column("split").null_count == 4


def test_shipped_config_loads_with_overrides():
    from sslray.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(AggregateConfig, root / "configs" / "aggregate" / "spot_dino.yaml",
                      ["embeddings=s3://b/emb", "out=s3://b/spots", "model.depth=2"])
    assert cfg.model.depth == 2 and cfg.model.dim == 192 and cfg.views.n_local == 6 and cfg.tile_size is None
    assert cfg.dino.head_config().out_dim == 2048


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_and_embeds_on_cuda():
    tiles = _tiles(8)
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    model, losses = train_aggregator(torch.from_numpy(tiles["embedding"]), grids, _config_obj(steps=5), "cuda")
    out = embed_spots(model.teacher, torch.from_numpy(tiles["embedding"]), grids, device="cuda")
    assert len(losses) == 5 and out.shape == (8, 16) and np.isfinite(out).all()


def test_aggregate_package_does_not_import_ray():
    """Plain torch + numpy + pyarrow: usable without a cluster (docs/architecture.md)."""
    import subprocess
    import sys

    code = "import sys, sslray.aggregate; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
