"""sslray explain end to end on the tiny store: per-head attention maps of a ViT (one set per channel image
for a channel-agnostic one), Grad-CAM of a ResNet through a linear head, masks, the published folder and
its MLflow run; and the refusals: an unknown image, a CNN without a head, a ViT with one, a bad class."""

import json

import mlflow
import numpy as np
import pytest

from sslray import storage
from sslray.artifacts.linear_head import HeadError
from sslray.explain.config import ExplainConfig
from sslray.explain.run import run_explain


@pytest.fixture(autouse=True)
def _no_parent_run(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


def _explain(tmp_path, checkpoint: str, store: str, **keys) -> tuple[str, dict]:
    cfg = ExplainConfig(checkpoint=checkpoint, store=store, out=str(tmp_path / "explained"),
                        run_dir=str(tmp_path / "runs"), **keys)
    out = run_explain(cfg)
    return out, json.loads((tmp_path / "explained" / "index.json").read_text())


def _first_image(store) -> str:
    return store.manifest["image_id"].iloc[0]


def test_a_vit_gets_one_stitched_attention_map_per_head(tmp_path, tiny_store, vit_checkpoint):
    image_id = _first_image(tiny_store)
    out, index = _explain(tmp_path, vit_checkpoint, tiny_store.url, images=[image_id])
    assert index["method"] == "attention" and [e["image_id"] for e in index["images"]] == [image_id]
    (entry,) = index["images"]
    assert entry["n_tiles"] == 4 and entry["footprint"] == 64 and entry["channels"] == ["DNA", "cytoplasm"]
    assert sorted(map(tuple, entry["tiles"])) == [(0, 0), (0, 64), (64, 0), (64, 64)]  # a 128 px field
    assert entry["canvas"]["shape"] == [128, 128] and entry["canvas"]["scale"] == 1
    (maps,) = entry["sets"]
    assert list(maps["maps"]) == ["head0", "head1", "head2", "head3"]  # 4 heads
    head = np.load(tmp_path / "explained" / maps["maps"]["head2"])
    tiles = np.load(tmp_path / "explained" / maps["tile_maps"])
    assert head.shape == (128, 128) and np.isfinite(head).all() and tiles.shape == (4, 4, 4, 4)  # 32 px / 8 px
    assert head.min() > 0 and head.max() < 1  # softmax weights of 16 patches and a class token
    assert (tmp_path / "explained" / maps["png"]).read_bytes()[:4] == b"\x89PNG"
    assert storage.artifact_kind(out) == "explanations"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (run,) = client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
    assert run.data.tags["sslray.stage"] == "explain" and run.info.run_name == "explain explained"
    assert run.info.status == "FINISHED" and run.data.metrics["n_tiles"] == 4
    logged = {a.path for a in client.list_artifacts(run.info.run_id, f"explanations/{entry['folder']}")}
    assert logged == {f"explanations/{entry['folder']}/overlay.png"}  # the pictures, not the .npy maps


def test_a_channel_agnostic_vit_gets_a_map_set_per_channel_and_a_mask_blanks_background(tmp_path, tiny_store,
                                                                                        per_channel_vit):
    _, index = _explain(tmp_path, per_channel_vit, tiny_store.url, n_images=2, mask_channel="DNA")
    assert len(index["images"]) == 2
    sets = index["images"][0]["sets"]
    assert [s["channel"] for s in sets] == ["DNA", "cytoplasm"]
    dna = np.load(tmp_path / "explained" / sets[0]["maps"]["head0"])
    assert np.isnan(dna).any() and np.isfinite(dna).any()  # kept on the DNA foreground only
    assert np.load(tmp_path / "explained" / sets[1]["tile_maps"]).shape == (4, 4, 4, 4)


def test_a_cnn_is_explained_by_grad_cam_of_the_heads_class(tmp_path, tiny_store, resnet_checkpoint, resnet_head):
    _, index = _explain(tmp_path, resnet_checkpoint, tiny_store.url, n_images=1, head=resnet_head,
                        class_name="empty")
    (entry,) = index["images"]
    assert index["method"] == "gradcam" and index["class"] == "empty" and entry["tile_classes"] == ["empty"] * 4
    (maps,) = entry["sets"]
    cam = np.load(tmp_path / "explained" / maps["maps"]["gradcam"])
    assert cam.shape == (128, 128) and (cam >= 0).all()
    assert np.load(tmp_path / "explained" / maps["tile_maps"]).shape == (4, 1, 2, 2)  # 64 px input, reduction 32


def test_an_image_not_in_the_store_is_an_error_naming_it(tmp_path, tiny_store, vit_checkpoint):
    with pytest.raises(ValueError, match=f"image 'no/such' is not in tile store {tiny_store.url}"):
        _explain(tmp_path, vit_checkpoint, tiny_store.url, images=["no/such"])
    assert not (tmp_path / "explained").exists()


def test_a_cnn_without_a_head_and_a_vit_with_one_are_refused(tmp_path, tiny_store, vit_checkpoint, resnet_checkpoint,
                                                             resnet_head):
    with pytest.raises(ValueError, match="is a resnet10t without class-token attention: .* pass --head FILE"):
        _explain(tmp_path, resnet_checkpoint, tiny_store.url)
    with pytest.raises(ValueError, match="Grad-CAM of a head is for CNN encoders, .* drop --head"):
        _explain(tmp_path, vit_checkpoint, tiny_store.url, head=resnet_head)
    with pytest.raises(HeadError, match=r"class 'tumour' is not one of the head's classes \['cells', 'empty'\]"):
        _explain(tmp_path, resnet_checkpoint, tiny_store.url, head=resnet_head, class_name="tumour")


def test_a_mask_channel_the_image_lacks_is_refused(tmp_path, tiny_store, vit_checkpoint):
    with pytest.raises(ValueError, match=r"mask_channel 'DAPI': .* has no such channel .*\['DNA', 'cytoplasm'\]"):
        _explain(tmp_path, vit_checkpoint, tiny_store.url, mask_channel="DAPI")
    with pytest.raises(ValueError, match="mask_channel=tissue: .* is not a slide"):
        _explain(tmp_path, vit_checkpoint, tiny_store.url, mask_channel="tissue")


@pytest.mark.realdata
def test_the_cmu_slide_is_explained_from_the_file_and_from_its_store_at_level0_footprints(test_data, tmp_path,
                                                                                          rgb_vit):
    from sslray.data.ingest import IngestConfig, ingest_folder

    svs = test_data / "wsi" / "CMU-1-Small-Region.svs"  # 2220 x 2967 px at 0.499 mpp
    tiling = IngestConfig(tile_size=224, mpp=1.0, min_tissue=0.5)
    cfg = ExplainConfig(checkpoint=rgb_vit, slides=str(svs), tiling=tiling, out=str(tmp_path / "from_file"),
                        run_dir=str(tmp_path / "runs"), max_tiles=6, mask_channel="tissue")
    run_explain(cfg)
    (entry,) = json.loads((tmp_path / "from_file" / "index.json").read_text())["images"]
    assert entry["image_id"] == "CMU-1-Small-Region" and entry["n_tiles"] == 6
    assert entry["footprint"] == pytest.approx(224 * 1.0 / 0.499, rel=1e-3)  # level-0 pixels of a 1.0 mpp tile
    steps = {x for x, _ in entry["tiles"]}
    assert min(b - a for a, b in zip(sorted(steps), sorted(steps)[1:])) in (448, 449)  # tiles side by side
    (maps,) = entry["sets"]
    head = np.load(tmp_path / "from_file" / maps["maps"]["head0"])
    assert head.shape == tuple(entry["canvas"]["shape"]) and np.isnan(head).any() and np.isfinite(head).any()
    assert (tmp_path / "from_file" / maps["png"]).stat().st_size > 10_000
    store = ingest_folder(IngestConfig(workers=0, src=str(svs), out=str(tmp_path / "store"), tile_size=224, mpp=1.0,
                                       min_tissue=0.5))
    cfg = ExplainConfig(checkpoint=rgb_vit, store=store.url, out=str(tmp_path / "from_store"),
                        run_dir=str(tmp_path / "runs"), max_tiles=6, images=["CMU-1-Small-Region"])
    run_explain(cfg)
    (stored,) = json.loads((tmp_path / "from_store" / "index.json").read_text())["images"]
    assert stored["footprint"] == entry["footprint"] and stored["tiles"] == entry["tiles"]  # the slide file was found
    np.testing.assert_allclose(np.load(tmp_path / "from_store" / stored["sets"][0]["tile_maps"]),
                               np.load(tmp_path / "from_file" / maps["tile_maps"]), atol=1e-5)


def test_no_explain_module_reaches_ray():
    from tests.test_imports import import_graph, reachable

    internal, external = import_graph()
    roots = [m for m in internal if m.startswith("sslray.explain")]
    assert len(roots) >= 7
    assert {r: sorted(m for m in reachable(internal, r) if "ray" in external[m]) for r in roots} == {r: [] for r in roots}
