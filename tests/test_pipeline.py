"""One end-to-end run on real Ray: tile store -> pretrain -> embed -> evaluate, tracked in MLflow.

Kept to one tiny run (a few steps, a 1-block ViT): on 2 cores a TorchTrainer fit alone
takes about a minute. Methods, losses and metrics are tested in plain torch elsewhere.
"""

import json

import mlflow
import numpy as np
import pyarrow.dataset as pads
import pytest

from sslray import storage
from sslray.config import from_dict
from sslray.evaluate.run import EvaluateConfig, run_evaluate
from sslray.infer.embed import EmbedConfig, run_embed
from sslray.train.checkpoint import load_encoder
from sslray.train.config import PretrainConfig
from sslray.data.datasource import read_tile_store
from sslray.train.driver import run_pretrain

pytestmark = pytest.mark.ray


def test_read_tile_store_streams_every_tile_with_its_columns(ray_session, tiny_store):
    ds = read_tile_store(tiny_store, columns=["tile_id", "label"])
    batch = next(iter(ds.iter_batches(batch_size=1000, batch_format="numpy")))
    order = np.argsort(batch["tile_id"])
    assert batch["image"].shape == (len(tiny_store), 2, 64, 64) and batch["image"].dtype == np.uint8
    np.testing.assert_array_equal(batch["image"][order], tiny_store.read(0, len(tiny_store)))
    assert list(batch["label"][order]) == tiny_store.manifest["label"].tolist()


def test_selected_view_streams_only_its_tiles_and_channels(ray_session, tiny_store):
    from sslray.data.selection import Selection

    view = tiny_store.select(Selection(where={"label": ["round", "spindle"]}, channels=["cytoplasm"]))
    batch = next(iter(read_tile_store(view, columns=["tile_id"], shuffle=True).iter_batches(batch_size=1000,
                                                                                         batch_format="numpy")))
    order = np.argsort(batch["tile_id"])
    assert batch["tile_id"][order].tolist() == view.manifest["tile_id"].tolist()
    np.testing.assert_array_equal(batch["image"][order], view.read(0, len(view)))
    assert batch["image"].shape[1] == 1


def test_magnification_pairs_stream_as_two_tile_rows(ray_session, tmp_path):
    from sslray.data.ingest import IngestConfig, ingest_folder
    from sslray.data.pairs import PairPolicy
    from tests.conftest import write_png

    rng = np.random.default_rng(0)
    for mag in (40, 100, 200):
        for seq in (1, 2, 3):
            write_png(tmp_path / "src" / "P1" / f"{mag}X" / f"P1-{mag}-{seq:03d}.png",
                      rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32,
                                       magnification_groups=True))
    batch = next(iter(read_tile_store(store, columns=["tile_id"], shuffle=True, pairs=PairPolicy("ordered"))
                      .iter_batches(batch_size=100, batch_format="numpy")))
    m = store.manifest
    tiles = store.read(0, len(store))
    assert batch["image"].shape == (6, 2, 3, 32, 32)  # 40->100 and 100->200 for 3 fields
    for tile_id, pair in zip(batch["tile_id"], batch["image"], strict=True):
        np.testing.assert_array_equal(pair[0], tiles[tile_id])
        partner = int(np.flatnonzero((tiles == pair[1]).all(axis=(1, 2, 3)))[0])
        assert m["field_id"][partner] == m["field_id"][tile_id]
        assert m["magnification"][partner] == {40.0: 100.0, 100.0: 200.0}[m["magnification"][tile_id]]


def test_ingest_pretrain_embed_evaluate(ray_session, tiny_store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    cfg = from_dict(PretrainConfig, {
        "store": tiny_store.url, "run_dir": str(out), "name": "itest",
        "model": {"name": "vit_tiny_patch16_224",
                  "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}},
        "method": {"name": "dino", "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
                   "views": {"global_size": 32, "local_size": 16, "n_local": 2}},
        "train": {"steps": 4, "batch_size": 16, "cpus_per_worker": 1.0, "log_every": 2, "checkpoint_every": 2},
    })
    result = run_pretrain(cfg)
    assert result.steps == 4 and storage.is_complete(tiny_store.url)
    saved = storage.read_json(str(out / "checkpoints" / "itest" / "sslray_config.json"))
    assert saved["method"]["out_dim"] == 64 and saved["train"]["steps"] == 4
    encoder, meta = load_encoder(result.checkpoint)
    assert meta.step == 4 and meta.in_chans == 2 and meta.image_size == 32
    assert meta.lineage.manifest_sha256 and meta.config["method"]["out_dim"] == 64
    assert result.summary["last_step"] == 4 and [w["rank"] for w in result.summary["workers"]] == [0]
    assert result.summary["workers"][0]["steps"] == 3 and result.summary["images_per_s"] > 0

    table_url = run_embed(EmbedConfig(checkpoint=result.checkpoint, store=tiny_store.url,
                                      out=str(out / "emb"), batch_size=32, run_dir=str(out)))
    table = pads.dataset(table_url, format="parquet").to_table()
    assert table.num_rows == len(tiny_store)
    assert {"tile_id", "image_id", "label", "group", "embedding", "checkpoint"} <= set(table.column_names)
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape == (len(tiny_store), 32) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)

    scores = run_evaluate(EvaluateConfig(embeddings=table_url, run_dir=str(out), c_grid=[0.1, 1.0]))
    assert 0 <= scores["balanced_accuracy"] <= 1 and 0 <= scores["macro_auc"] <= 1

    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    runs = {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("sslray").experiment_id)}
    assert set(runs) == {"pretrain itest", "embed emb", "evaluate emb"}  # "<stage> <input>"
    pretrain = runs["pretrain itest"]
    assert pretrain.data.params["method.out_dim"] == "64" and pretrain.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(pretrain.info.run_id, "loss")] == [2, 4]
    assert pretrain.data.tags["sslray.manifest_sha256"] == meta.lineage.manifest_sha256
    assert {"images_per_s", "images_per_s_per_worker", "data_wait_fraction", "step_time_s", "lr"} <= set(
        pretrain.data.metrics)
    assert [w["device"] for w in json.loads(pretrain.data.tags["sslray.workers"])] == ["cpu"]
    artifacts = {a.path for a in client.list_artifacts(pretrain.info.run_id)}
    assert {"config.json", "throughput.json", "checkpoint"} <= artifacts
    assert "test_balanced_accuracy" in runs["evaluate emb"].data.metrics
    assert runs["embed emb"].data.metrics["n_rows"] == len(tiny_store)
    assert {r.data.tags["sslray.stage"] for r in runs.values()} == {"pretrain", "embed", "evaluate"}


def test_quickstart_writes_the_summary(ray_session, tmp_path, monkeypatch):
    """The main job end to end on its default data (a handful of steps: plumbing, not accuracy)."""
    from sslray.quickstart import QuickstartConfig, run_quickstart

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    summary = run_quickstart(QuickstartConfig(run_dir=str(tmp_path / "qs"), steps=3)).to_json()
    on_disk = json.loads((tmp_path / "qs" / "summary.json").read_text())
    assert on_disk == summary and summary["n_tiles"] == 768 and summary["steps"] == 3
    for name in ("ssl", "random_init"):
        assert set(summary[name]) == {"balanced_accuracy", "macro_auc"}
        assert 0 <= summary[name]["balanced_accuracy"] <= 1
    assert summary["tracking_uri"] == f"sqlite:///{tmp_path}/qs/mlflow.db"
    for name in ("ssl", "random_init"):  # slide-level MIL on the composed slides
        assert set(summary["mil"][name]) == {"mean_pool/auc", "mean_pool/balanced_accuracy", "abmil/auc",
                                             "abmil/balanced_accuracy"}
        assert (tmp_path / "qs" / "results" / "mil" / f"{name}_slides" / "results.json").exists()

    client = mlflow.MlflowClient(summary["tracking_uri"])
    experiment = client.get_experiment_by_name("sslray")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the runs table, not GenAI
    runs = client.search_runs(experiment.experiment_id)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted(r.info.run_name for r in runs if r is not parent)
    assert parent.info.run_name == "quickstart dino" and parent.info.status == "FINISHED"
    assert children == sorted(["ingest data", "pretrain quickstart-dino", "embed ssl", "embed random_init",
                               "evaluate ssl", "evaluate random_init", "evaluate ssl_slides",
                               "evaluate random_init_slides"])
    assert {r.data.tags["mlflow.parentRunId"] for r in runs if r is not parent} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
