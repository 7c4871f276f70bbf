"""``sslray embed``'s glue: the encoder path, the channel choice and the run's lifecycle.

Ray is replaced by an in-process dataset that runs the same ``Embedder`` over the store, so the
lifecycle (tracked run, atomic publication, failure) is tested without a cluster; the real
Ray Data run is in tests/test_pipeline.py.
"""

from pathlib import Path
from types import SimpleNamespace

import mlflow
import pyarrow.parquet as pq
import pytest
import torch

from sslray import storage
from sslray.artifacts.embeddings import carried_columns
from sslray.artifacts.selection import Selection
from sslray.config import from_dict
from sslray.infer import embed
from sslray.infer.embed import EmbedConfig, Embedder, encode, run_embed

TINY_VIT = {"name": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


@pytest.fixture(scope="module")
def checkpoint(tiny_store, tmp_path_factory) -> str:
    """An untrained tiny ViT saved in the checkpoint format (two channels, 32 px)."""
    from sslray.quickstart.pipeline import save_random_init
    from sslray.train.config import PretrainConfig

    cfg = from_dict(PretrainConfig, {"store": tiny_store.url, "model": TINY_VIT, "method": {
        "name": "dino", "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
        "views": {"global_size": 32, "local_size": 16, "n_local": 2}}})
    url = str(tmp_path_factory.mktemp("ckpt") / "random_init")
    save_random_init(cfg, tiny_store, url)
    return url


class _InProcess:
    """What ``_embedded`` hands back, without Ray: one ``Embedder`` over the whole store."""

    def __init__(self, cfg: EmbedConfig, store, fail: bool = False) -> None:
        self.cfg, self.store, self.fail = cfg, store, fail

    def write_parquet(self, path: str) -> None:
        manifest = self.store.manifest_table
        batch = {c: manifest.column(c).to_numpy(zero_copy_only=False)
                 for c in carried_columns(manifest.column_names)}
        batch["image"] = self.store.read(0, len(self.store))
        Path(path, "part-0.parquet").write_bytes(b"")  # something in staging before the failure
        if self.fail:
            raise RuntimeError("an actor died")
        pq.write_table(Embedder(self.cfg.checkpoint, self.cfg.l2_normalize)(batch), f"{path}/part-0.parquet")


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr("sslray.runtime.ensure_ray", lambda: None)
    state = {"fail": False}
    monkeypatch.setattr(embed, "_embedded", lambda cfg, store: _InProcess(cfg, store, state["fail"]))
    return state


def _runs(run_dir: Path) -> dict:
    client = mlflow.MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    return {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("sslray").experiment_id)}


def test_the_table_is_published_and_its_run_named_by_the_output(in_process, tiny_store, checkpoint, tmp_path):
    cfg = EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out=str(tmp_path / "embeddings" / "ssl"),
                      run_dir=str(tmp_path))
    assert run_embed(cfg) == cfg.out and storage.is_complete(cfg.out)
    table = pq.read_table(cfg.out)
    info = storage.read_json(f"{cfg.out}/_SUCCESS")
    assert table.num_rows == len(tiny_store) and info["dim"] == 32
    assert info["per_channel"] is False and info["channels"] == ["DNA", "cytoplasm"]  # what profile names blocks by
    run = _runs(tmp_path)["embed ssl"]
    assert run.info.status == "FINISHED" and run.data.metrics["n_rows"] == len(tiny_store)
    assert run.data.tags["sslray.stage"] == "embed" and run.data.tags["sslray.embeddings"] == cfg.out


def test_a_failed_embedding_leaves_no_staging_keeps_the_old_table_and_fails_its_run(in_process, tiny_store,
                                                                                   checkpoint, tmp_path):
    out = tmp_path / "tables" / "emb"
    cfg = EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out=str(out), run_dir=str(tmp_path), name="first")
    run_embed(cfg)
    before = pq.read_table(out)
    in_process["fail"] = True
    with pytest.raises(RuntimeError, match="an actor died"):
        run_embed(EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out=str(out), run_dir=str(tmp_path),
                              overwrite=True, name="second"))
    assert [p.name for p in out.parent.iterdir()] == ["emb"] and pq.read_table(out).equals(before)
    runs = _runs(tmp_path)
    assert runs["embed first"].info.status == "FINISHED" and runs["embed second"].info.status == "FAILED"


def test_a_destination_it_did_not_write_is_refused_before_any_work(in_process, tiny_store, checkpoint, tmp_path):
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        run_embed(EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out=str(tmp_path / "emb"),
                              run_dir=str(tmp_path), overwrite=True))
    assert (tmp_path / "emb" / "notes.txt").read_text() == "keep" and not (tmp_path / "mlflow.db").exists()


def test_the_checkpoints_channels_are_picked_by_name_and_a_mismatch_is_named(tiny_store, checkpoint):
    from sslray.artifacts.checkpoint import read_meta

    meta = read_meta(checkpoint)
    view = embed._select(tiny_store, Selection(), meta, checkpoint)
    assert view.info.channels == list(meta.channels) == ["DNA", "cytoplasm"]
    with pytest.raises(ValueError, match="expects 2"):
        embed._select(tiny_store, Selection(channels=["DNA"]), meta, checkpoint)


def test_a_per_channel_checkpoint_encodes_each_channel_as_its_own_image():
    meta = SimpleNamespace(scale=255.0, image_size=8, per_channel=True, mean=[0.0], std=[1.0])
    images = torch.stack([torch.full((3, 8, 8), v) for v in (0.0, 51.0)]).to(torch.uint8)
    images[:, 1] = 255
    features = encode(lambda x: x.mean(dim=(1, 2, 3)).unsqueeze(1), images, meta, torch.device("cpu"))
    assert features.shape == (2, 3)
    torch.testing.assert_close(features, torch.tensor([[0.0, 1.0, 0.0], [0.2, 1.0, 0.2]]))


@pytest.mark.parametrize("bad", [{"checkpoint": ""}, {"store": ""}, {"out": ""}, {"batch_size": 0}])
def test_missing_inputs_and_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError):
        EmbedConfig(**{"checkpoint": "c", "store": "s", "out": "o", **bad})
