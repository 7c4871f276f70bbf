"""``run_profile`` end to end on a tiny embeddings table: published files, lineage, MLflow, bad input."""

import logging

import mlflow
import numpy as np
import pytest

from sslray import storage
from sslray.artifacts.embeddings import EmbeddingsTable
from sslray.profile.config import ProfileConfig
from sslray.profile.normalize import apply_pipeline
from sslray.profile.profiles import PLATE, RAW_FILE, WELL, feature_columns, read_profiles
from sslray.profile.run import channel_layout, run_profile
from tests.profile.tables import BLOCK, CHANNELS, write_embeddings, write_plate_map


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


def _config(tmp_path, **kwargs) -> ProfileConfig:
    base = {"embeddings": write_embeddings(tmp_path / "emb"), "out": str(tmp_path / "profiles"),
            "metadata": write_plate_map(tmp_path / "platemap.csv"), "run_dir": str(tmp_path / "runs")}
    return ProfileConfig(**{**base, **kwargs})


def test_the_profiles_are_published_with_raw_profiles_lineage_and_a_run(tmp_path):
    cfg = _config(tmp_path)
    assert run_profile(cfg) == cfg.out and storage.artifact_kind(cfg.out) == "profiles"
    profiles, raw = read_profiles(cfg.out), read_profiles(cfg.out, RAW_FILE)
    assert len(profiles) == 12 and profiles[WELL].tolist()[:6] == ["A01", "A02", "A03", "A04", "A05", "A06"]
    assert feature_columns(raw) == [f"{c}_{i:03d}" for c in CHANNELS for i in range(BLOCK)]
    assert raw["Metadata_n_tiles"].tolist() == [6] * 12 and raw["Metadata_n_sites"].tolist() == [2] * 12
    assert set(raw["Metadata_control"]) == {True, False} and raw[PLATE].tolist()[0] == "P1"
    again = apply_pipeline(raw, cfg.normalize, cfg.control)  # published = the pipeline applied to raw
    assert np.allclose(again[feature_columns(again)], profiles[feature_columns(profiles)])
    info = storage.read_json(storage.join(cfg.out, storage.SUCCESS_MARKER))
    assert info["n_wells"] == 12 and info["n_features"] == len(feature_columns(profiles)) and info["n_dropped"] == 0
    assert info["lineage"] == {"embeddings": cfg.embeddings, "checkpoint": str(tmp_path / "emb" / "no_checkpoint"),
                               "store": "s"}
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("sslray").experiment_id])
    assert run.info.run_name == "profile emb" and run.info.status == "FINISHED"
    assert run.data.metrics["n_wells"] == 12 and run.data.metrics["n_tiles"] == 72
    assert run.data.tags["sslray.profiles"] == cfg.out
    with pytest.raises(ValueError, match="is a profiles table, not an embeddings table"):
        EmbeddingsTable.read(cfg.out)


def test_a_well_with_only_empty_tiles_is_dropped_and_counted(tmp_path, caplog):
    cfg = _config(tmp_path, min_foreground=0.1, normalize=[])
    with caplog.at_level(logging.WARNING):
        run_profile(cfg)
    assert "P2 / r01c06" not in caplog.text and "P2 / A06 / 01" in caplog.text
    info = storage.read_json(storage.join(cfg.out, storage.SUCCESS_MARKER))
    assert info["n_wells"] == 11 and info["n_dropped"] == 1


def test_the_perturbation_level_is_the_consensus_of_normalised_wells(tmp_path):
    run_profile(_config(tmp_path, level="perturbation"))
    profiles = read_profiles(str(tmp_path / "profiles"))
    assert profiles["Metadata_perturbation"].tolist() == ["DMSO", "cmpd0", "cmpd1"]
    assert profiles["Metadata_n_wells"].tolist() == [6, 2, 4]


def test_without_a_plate_map_the_table_s_own_columns_are_the_metadata(tmp_path):
    cfg = _config(tmp_path, metadata=None, normalize=[], level="site")
    run_profile(cfg)
    profiles = read_profiles(cfg.out)
    assert len(profiles) == 24 and set(profiles[PLATE]) == {"P1", "P2"}  # plates from the source folders
    with pytest.raises(ValueError, match="level perturbation needs a perturbation column"):
        run_profile(_config(tmp_path / "b", metadata=None, normalize=[], level="perturbation"))


def test_older_tables_without_the_channel_layout_get_plain_names(tmp_path):
    url = write_embeddings(tmp_path / "emb", per_channel_info=False)
    info = storage.read_json(storage.join(url, storage.SUCCESS_MARKER))
    assert channel_layout(info, url) == (None, False)  # the checkpoint is gone: emb_*
    cfg = ProfileConfig(embeddings=url, out=str(tmp_path / "p"), normalize=[], run_dir=str(tmp_path / "runs"))
    run_profile(cfg)
    assert feature_columns(read_profiles(cfg.out))[0] == "emb_000"


def test_a_plate_map_naming_wells_without_tiles_fails_before_anything_is_written(tmp_path):
    cfg = _config(tmp_path)
    write_plate_map(tmp_path / "platemap.csv", plates=("P1", "P2", "P3"))
    with pytest.raises(ValueError, match=r"names 6 plate/well\(s\) with no tiles: \['P3/A01'"):
        run_profile(cfg)
    assert not storage.exists(cfg.out)


def test_a_plate_without_controls_is_an_error_and_nothing_is_published(tmp_path):
    cfg = _config(tmp_path, normalize=[{"name": "spherize", "by": "Metadata_Plate"}])
    text = (tmp_path / "platemap.csv").read_text().splitlines()
    (tmp_path / "platemap.csv").write_text("\n".join(
        [line.replace(",True,", ",False,") if line.startswith("P2") else line for line in text]) + "\n")
    with pytest.raises(ValueError, match="spherize: Metadata_Plate P2 has no control profiles"):
        run_profile(cfg)
    assert not storage.exists(cfg.out) and not list(tmp_path.glob(".profiles.partial*"))


@pytest.mark.realdata
@pytest.mark.ray
def test_a_real_cell_painting_site_becomes_one_well_profile_named_by_channel(test_data, tmp_path, ray_session):
    """BR00143976, well C03, site 3 (JUMP cpg0016, Opera Phenix naming): ingest -> embed with an untrained
    channel-agnostic ViT -> one well profile of 5 x embed_dim features named by stain."""
    from sslray.config import from_dict, load_config
    from sslray.data.ingest import IngestConfig, ingest_folder
    from sslray.infer.embed import EmbedConfig, run_embed
    from sslray.quickstart.pipeline import save_random_init
    from sslray.train.config import PretrainConfig
    from tests.conftest import ROOT

    source = test_data / "cellpainting" / "BR00143976_C03_f03"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    store = ingest_folder(load_config(IngestConfig, ROOT / "configs" / "ingest" / "cell_painting.yaml",
                                      [f"src={source.parent}", f"out={tmp_path / 'store'}", "workers=0"]))
    tiny = {"name": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}}
    pretrain = from_dict(PretrainConfig, {"store": store.url, "model": tiny, "method": {
        "name": "channel_agnostic_dino", "out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8,
        "views": {"global_size": 32, "local_size": 16, "n_local": 2}}})
    checkpoint = str(tmp_path / "random_init")
    save_random_init(pretrain, store, checkpoint)
    embeddings = run_embed(EmbedConfig(checkpoint=checkpoint, store=store.url, out=str(tmp_path / "emb"),
                                       run_dir=str(tmp_path / "runs"), batch_size=16))
    out = run_profile(ProfileConfig(embeddings=embeddings, out=str(tmp_path / "profiles"), normalize=[],
                                    run_dir=str(tmp_path / "runs")))
    profiles = read_profiles(out)
    assert len(profiles) == 1
    assert profiles["Metadata_Plate"][0].startswith("BR00143976") and profiles["Metadata_Well"][0] == "C03"
    assert "Metadata_Site" not in profiles  # a well profile: its one site was averaged in
    features = feature_columns(profiles)
    stains = ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert features == [f"{stain}_{i:03d}" for stain in stains for i in range(16)]
    assert profiles["Metadata_n_tiles"][0] == len(store) == 16 and profiles["Metadata_n_sites"][0] == 1
    assert np.isfinite(profiles[features].to_numpy()).all()
