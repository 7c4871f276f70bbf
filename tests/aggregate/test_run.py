"""``run_aggregate`` end to end on local Ray: a written embeddings table -> spot_dino on Ray Train
-> a published spot table whose ``_aggregator/`` is a standard, checksummed checkpoint."""

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
import torch

from sslray import storage
from sslray.aggregate import build_grids, embed_spots, load_aggregator, run_aggregate
from sslray.artifacts.checkpoint import read_meta
from sslray.artifacts.spot_table import AGGREGATOR_DIR, SpotTable
from tests.aggregate.tables import DIM, TILE, aggregate_config, tiles_of, write_table


def test_run_aggregate_trains_on_ray_and_publishes_the_spot_table(tmp_path, ray_session):
    import mlflow

    tiles = tiles_of(24)
    write_table(tmp_path / "emb", tiles)
    cfg = aggregate_config(tmp_path, cpus_per_worker=0.5)
    url = run_aggregate(cfg)
    assert url == cfg.out and storage.is_complete(url)
    info = storage.read_json(storage.join(url, storage.SUCCESS_MARKER))
    assert info["n_rows"] == 24 and info["dim"] == 16 and info["carried_columns"] == ["label", "group", "split"]

    table = pads.dataset(url, format="parquet").to_table()  # the _aggregator directory is skipped
    assert table.column_names == ["image_id", "label", "group", "split", "n_tiles", "grid_rows", "grid_cols",
                                  "embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 16)
    assert SpotTable.read(url).spot_column == "image_id"
    emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(24, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    for row in table.to_pylist():
        own = tiles["image_id"] == row["image_id"]
        assert row["n_tiles"] == own.sum() and row["label"] == tiles["label"][own][0]

    # _aggregator/ is a standard checkpoint: the spot encoder, SHA-256s, the grids it was trained on
    meta = read_meta(storage.join(url, AGGREGATOR_DIR))
    assert meta.method == "spot_dino" and meta.model.name == "spot_encoder" and meta.in_chans == DIM
    assert set(meta.files) == {"encoder.safetensors"} and meta.extra["grid_step"] == [TILE, TILE]
    encoder, loaded = load_aggregator(url)
    assert loaded["in_dim"] == DIM and loaded["spot_column"] == "image_id"
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    again = embed_spots(encoder, torch.from_numpy(tiles["embedding"]), grids)
    np.testing.assert_allclose(again, emb, atol=1e-5)  # the saved teacher reproduces the published embeddings

    # the run's checkpoints are where every pretraining run keeps them, with the train state to resume from
    assert list((tmp_path / "runs" / "checkpoints" / "aggregate").glob("checkpoint_*/train_state.pt"))
    client = mlflow.MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sslray").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["sslray.embeddings"] == cfg.embeddings
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 3
    assert "spots_effective_rank" in run.data.metrics and run.data.params["spot_column"] == "image_id"

    with pytest.raises(FileExistsError, match="already exists"):
        run_aggregate(cfg)


def test_failures_before_training_start_no_run(tmp_path):
    write_table(tmp_path / "emb", tiles_of(4))
    with pytest.raises(KeyError, match=r"spot_column 'spot_id' is not a column of .*available columns: tile_id, "
                                        r"image_id, x, y"):
        run_aggregate(aggregate_config(tmp_path, spot_column="spot_id"))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_importing_the_stage_does_not_start_or_import_ray():
    """Ray comes in only when training starts (docs/architecture.md): notebooks load spot tables without it."""
    import subprocess
    import sys

    code = "import sys, sslray.aggregate; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
