"""``sslray embed``: the run's lifecycle, exactly-once partitions, resume, failures by name.

Most tests replace the Ray pipeline by an in-process one that runs the same readers and the
same ``Embedder`` (``_in_process``), so lifecycle and resume are tested without a cluster; the
real Ray Data runs, and a job killed with SIGKILL and rerun, are in tests/infer/test_stream.py.
"""

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest

from sslray import storage
from sslray.artifacts.embeddings import carried_columns
from sslray.artifacts.selection import Selection
from sslray.artifacts.tile_store import TileStore
from sslray.data.ingest_config import IngestConfig
from sslray.infer import embed, stream
from sslray.infer.embed import EmbedConfig, EmbedError, run_embed
from sslray.infer.encoder import Embedder
from sslray.infer.partitions import EmbedPlanMismatch
from sslray.infer.units import read_unit


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


@pytest.fixture
def in_process(monkeypatch):
    """The pipeline without Ray; ``state["die_after"]`` kills it after that many units were read."""
    monkeypatch.setattr("sslray.runtime.ensure_ray", lambda: None)
    state = {"die_after": None, "units_read": []}

    def died(unit: int) -> None:
        if state["die_after"] is not None and len(state["units_read"]) >= state["die_after"]:
            raise RuntimeError("the node was pre-empted")
        state["units_read"].append(unit)

    def store_blocks(store, groups, todo, actors):
        embedder = Embedder(actors.checkpoint, actors.l2_normalize, actors.empty_below)
        for unit in todo:
            died(unit)
            view = TileStore(store.url, store.info, store.store_manifest, groups[unit], store.channel_index)
            batch = {c: view.manifest_table.column(c).to_numpy(zero_copy_only=False)
                     for c in carried_columns(view.manifest_table.column_names)}
            yield stream.tag_store_block(embedder({**batch, "image": view.read(0, len(view))}), groups)

    def source_blocks(sources, todo, tiling, schema, channels, staging, actors, base=None):
        embedder = Embedder(actors.checkpoint, actors.l2_normalize, actors.empty_below)
        for unit in reversed(todo):  # in any order
            died(unit)
            for batch in read_unit(unit, sources[unit], tiling, schema, channels, staging, base):
                yield embedder(batch)

    monkeypatch.setattr(stream, "store_blocks", store_blocks)
    monkeypatch.setattr(stream, "source_blocks", source_blocks)
    return state


def _sources_cfg(synthetic_images, checkpoint, out: Path, **kw) -> EmbedConfig:
    root, labels = synthetic_images
    tiling = IngestConfig(tile_size=64, labels=str(labels), channels=["DNA", "cytoplasm"])
    return EmbedConfig(checkpoint=checkpoint, slides=str(root), tiling=tiling, out=str(out), run_dir=str(out.parent),
                       progress_every_s=3600, **kw)


def _runs(run_dir: Path) -> dict:
    client = mlflow.MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    return {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("sslray").experiment_id)}


def test_a_store_is_published_with_one_partition_per_shard_and_its_run_named_by_the_output(
        in_process, tiny_store, checkpoint, tmp_path):
    cfg = EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out=str(tmp_path / "embeddings" / "ssl"),
                      run_dir=str(tmp_path), progress_every_s=3600)
    assert run_embed(cfg) == cfg.out and storage.is_complete(cfg.out)
    table = pq.read_table(cfg.out)
    info = storage.read_json(f"{cfg.out}/_SUCCESS")
    assert table.column("tile_id").to_pylist() == list(range(len(tiny_store))) and info["dim"] == 32
    assert info["per_channel"] is False and info["channels"] == ["DNA", "cytoplasm"]  # what profile names blocks by
    assert info["n_rows"] == len(tiny_store) and info["n_partitions"] == len(list(Path(cfg.out).glob("part-*")))
    run = _runs(tmp_path)["embed ssl"]
    assert run.info.status == "FINISHED" and run.data.metrics["n_rows"] == len(tiny_store)
    assert run.data.tags["sslray.stage"] == "embed" and run.data.tags["sslray.embeddings"] == cfg.out


def test_slides_and_fields_embed_straight_from_files_one_partition_each(in_process, synthetic_images, checkpoint,
                                                                       tiny_store, tmp_path):
    cfg = _sources_cfg(synthetic_images, checkpoint, tmp_path / "emb")
    run_embed(cfg)
    table = pq.read_table(cfg.out)
    assert len(list(Path(cfg.out).glob("part-*.parquet"))) == 24 and table.num_rows == len(tiny_store)
    assert table.column("image_id").to_pylist() == tiny_store.manifest_table.column("image_id").to_pylist()
    assert table.column("label").to_pylist() == tiny_store.manifest_table.column("label").to_pylist()
    info = storage.read_json(f"{cfg.out}/_SUCCESS")
    assert info["channels"] == ["DNA", "cytoplasm"] and info["skipped"] == [] and info["n_rows"] == 96


def test_a_job_that_died_resumes_embedding_only_the_missing_partitions_exactly_once(
        in_process, synthetic_images, checkpoint, tmp_path):
    reference = pq.read_table(run_embed(_sources_cfg(synthetic_images, checkpoint, tmp_path / "whole")))
    in_process["units_read"].clear()
    in_process["die_after"] = 10
    cfg = _sources_cfg(synthetic_images, checkpoint, tmp_path / "emb")
    with pytest.raises(RuntimeError, match="pre-empted"):
        run_embed(cfg)
    assert not Path(cfg.out).exists()  # nothing visible
    first = list(in_process["units_read"])
    in_process.update(die_after=None, units_read=[])
    run_embed(cfg)
    assert sorted(in_process["units_read"]) == sorted(set(range(24)) - set(first))  # only the missing ones
    table = pq.read_table(cfg.out)
    assert table.drop_columns(["embedding"]).equals(reference.drop_columns(["embedding"]))
    np.testing.assert_allclose(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
                               np.stack(reference.column("embedding").to_numpy(zero_copy_only=False)), atol=1e-6)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    finished = [r for r in client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
                if r.info.run_name == "embed emb" and r.info.status == "FINISHED"]
    assert [r.data.metrics["n_resumed"] for r in finished] == [len(first)]


def test_a_finished_job_rerun_is_a_no_op_and_another_jobs_partitions_are_refused(in_process, synthetic_images,
                                                                                 checkpoint, tmp_path):
    cfg = _sources_cfg(synthetic_images, checkpoint, tmp_path / "emb")
    run_embed(cfg)
    in_process["units_read"].clear()
    assert run_embed(cfg) == cfg.out and in_process["units_read"] == []
    in_process["die_after"] = 3
    other = _sources_cfg(synthetic_images, checkpoint, tmp_path / "other")
    with pytest.raises(RuntimeError):
        run_embed(other)
    in_process["die_after"] = None
    with pytest.raises(EmbedPlanMismatch, match="different embedding job.*l2_normalize"):
        run_embed(_sources_cfg(synthetic_images, checkpoint, tmp_path / "other", l2_normalize=False))


def test_unreadable_sources_are_named_the_rest_kept_and_skip_publishes_without_them(
        in_process, synthetic_images, checkpoint, tmp_path):
    root, labels = synthetic_images
    shutil_copy = tmp_path / "copy"  # a folder of its own: the broken file must not join the shared fixture
    shutil.copytree(root, shutil_copy)
    (shutil_copy / "round" / "round_000.tif").write_bytes(b"truncated")
    cfg = _sources_cfg((shutil_copy, labels), checkpoint, tmp_path / "emb")
    with pytest.raises(EmbedError, match=r"(?s)1 of 24 input\(s\).*round_000.tif: cannot decode"):
        run_embed(cfg)
    in_process["units_read"].clear()
    run_embed(_sources_cfg((shutil_copy, labels), checkpoint, tmp_path / "emb", on_error="skip"))
    assert in_process["units_read"] == [next(i for i, s in enumerate(sorted_rel(shutil_copy, labels))
                                             if s.endswith("round_000.tif"))]
    info = storage.read_json(f"{cfg.out}/_SUCCESS")
    assert [Path(s["source"]).name for s in info["skipped"]] == ["round_000.tif"] and info["n_rows"] == 92


def sorted_rel(root: Path, labels: Path) -> list[str]:
    from sslray.data.sources import IngestReport, discover_sources

    return [s.rel for s in discover_sources(IngestConfig(src=str(root), labels=str(labels)), IngestReport())]


def test_a_failed_run_keeps_the_old_table_and_fails_its_run(in_process, tiny_store, checkpoint, tmp_path):
    out = tmp_path / "tables" / "emb"
    cfg = EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out=str(out), run_dir=str(tmp_path), name="first")
    run_embed(cfg)
    before = pq.read_table(out)
    in_process["die_after"] = 0
    with pytest.raises(RuntimeError, match="pre-empted"):
        run_embed(EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out=str(out), run_dir=str(tmp_path),
                              overwrite=True, name="second"))
    assert pq.read_table(out).equals(before)
    runs = _runs(tmp_path)
    assert runs["embed first"].info.status == "FINISHED" and runs["embed second"].info.status == "FAILED"


def test_a_destination_it_did_not_write_is_refused_before_any_work(in_process, tiny_store, checkpoint, tmp_path):
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        run_embed(EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out=str(tmp_path / "emb"),
                              run_dir=str(tmp_path), overwrite=True))
    assert (tmp_path / "emb" / "notes.txt").read_text() == "keep" and not (tmp_path / "mlflow.db").exists()


def test_a_slide_list_naming_missing_files_is_refused_naming_them(in_process, synthetic_images, checkpoint,
                                                                 tmp_path):
    listing = tmp_path / "slides.csv"
    listing.write_text("path,label\nnot_there.svs,a\n")
    with pytest.raises(ValueError, match="not_there.svs"):
        run_embed(EmbedConfig(checkpoint=checkpoint, slides=str(listing), out=str(tmp_path / "emb"),
                              run_dir=str(tmp_path)))


def test_the_checkpoints_channels_are_picked_by_name_and_a_mismatch_is_named(tiny_store, checkpoint):
    from sslray.artifacts.checkpoint import read_meta

    meta = read_meta(checkpoint)
    view = embed._select(tiny_store, Selection(), meta, checkpoint)
    assert view.info.channels == list(meta.channels) == ["DNA", "cytoplasm"]
    with pytest.raises(ValueError, match="expects 2"):
        embed._select(tiny_store, Selection(channels=["DNA"]), meta, checkpoint)


@pytest.mark.parametrize("bad", [{"checkpoint": ""}, {"store": ""}, {"out": ""}, {"batch_size": 0},
                                 {"slides": "x"}, {"empty_below": 2.0}, {"on_error": "retry"}])
def test_missing_inputs_and_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError):
        EmbedConfig(**{"checkpoint": "c", "store": "s", "out": "o", **bad})


@pytest.mark.realdata
def test_a_multiplexed_qptiff_embeds_per_channel_with_overlapping_tiles_and_nan_rows_where_no_cells(
        in_process, test_data, per_channel_checkpoint, tmp_path):
    qptiff = test_data / "multiplex" / "small_vectra.qptiff"
    tiling = IngestConfig(tile_size=256, stride=128, channels=["DAPI", "FITC", "Cy3"], foreground_channel="DAPI")
    cfg = EmbedConfig(checkpoint=per_channel_checkpoint, slides=str(qptiff), tiling=tiling, out=str(tmp_path / "emb"),
                      empty_below=0.05, run_dir=str(tmp_path), progress_every_s=3600)
    table = pq.read_table(run_embed(cfg))
    info = storage.read_json(f"{cfg.out}/_SUCCESS")
    assert info["channels"] == ["DAPI", "FITC", "Cy3"] and info["dim"] == 3 * 32  # one block per channel
    assert table.num_rows == ((1440 - 256) // 128 + 1) * ((1920 - 256) // 128 + 1)  # every overlapping tile
    vectors, fraction = _vectors(table), table.column("tissue_fraction").to_numpy()
    assert np.isnan(vectors[fraction < 0.05]).all() and not np.isnan(vectors[fraction >= 0.05]).any()
    assert 0 < (fraction < 0.05).sum() < table.num_rows


def _vectors(table) -> np.ndarray:
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def test_slides_on_object_storage_embed_into_a_table_on_object_storage_and_resume_there(
        in_process, s3_server, synthetic_images, checkpoint, tmp_path):
    root, _ = synthetic_images
    for path in sorted(root.glob("*/*.tif"))[:6]:
        storage.write_bytes(f"{s3_server}/slides-in/{path.parent.name}/{path.name}", path.read_bytes())
    tiling = IngestConfig(tile_size=64, channels=["DNA", "cytoplasm"])
    cfg = EmbedConfig(checkpoint=checkpoint, slides=f"{s3_server}/slides-in", tiling=tiling,
                      out=f"{s3_server}/emb-out", run_dir=str(tmp_path), progress_every_s=3600)
    in_process["die_after"] = 2
    with pytest.raises(RuntimeError, match="pre-empted"):
        run_embed(cfg)
    assert not storage.is_complete(cfg.out)  # partitions in place, but no _SUCCESS: readers refuse it
    in_process.update(die_after=None, units_read=[])
    run_embed(cfg)
    assert len(in_process["units_read"]) == 4 and storage.is_complete(cfg.out)
    from sslray.artifacts.embeddings import EmbeddingsTable

    table = EmbeddingsTable.read(cfg.out).table
    assert table.num_rows == 6 * 4 and table.column("source").to_pylist()[0].endswith(".tif")


def test_the_same_command_with_overwrite_resumes_its_own_partial_job_and_then_replaces_the_old_table(
        in_process, synthetic_images, checkpoint, tmp_path):
    out = tmp_path / "emb"
    run_embed(_sources_cfg(synthetic_images, checkpoint, out, l2_normalize=False))  # an old table
    cfg = _sources_cfg(synthetic_images, checkpoint, out, overwrite=True)
    in_process.update(die_after=5, units_read=[])
    with pytest.raises(RuntimeError, match="pre-empted"):
        run_embed(cfg)
    in_process.update(die_after=None, units_read=[])
    run_embed(cfg)
    assert len(in_process["units_read"]) == 24 - 5  # the killed run's partitions were kept, not discarded
    assert storage.read_json(f"{out}/_SUCCESS")["l2_normalized"] is True


@pytest.mark.realdata
def test_a_published_encoder_imported_from_hugging_face_layout_embeds_the_cmu_slide(in_process, test_data, tmp_path):
    import torch
    from safetensors.torch import save_file

    from sslray.artifacts.checkpoint_import import ImportSpec, import_checkpoint
    from sslray.models.backbones import BackboneConfig, create_backbone
    from tests.models.hf_vit import timm_to_hf

    tiny = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    state = timm_to_hf(create_backbone(BackboneConfig("vit_tiny_patch16_224", tiny), 3).state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    ckpt = str(tmp_path / "imported")
    import_checkpoint(ImportSpec(model="vit_tiny_patch16_224", weights=str(tmp_path / "model.safetensors"),
                                 out=ckpt, kwargs=tiny, mpp=0.5))
    cfg = EmbedConfig(checkpoint=ckpt, slides=str(test_data / "wsi" / "CMU-1-Small-Region.svs"),
                      tiling=IngestConfig(tile_size=224, mpp=0.5), out=str(tmp_path / "emb"), run_dir=str(tmp_path),
                      progress_every_s=3600)
    table = pq.read_table(run_embed(cfg))
    assert table.num_rows > 20 and _vectors(table).shape[1] == 32 and not np.isnan(_vectors(table)).any()
    assert set(table.column("slide_id").to_pylist()) == {"CMU-1-Small-Region"}
