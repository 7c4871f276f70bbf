"""Which images and tiles are explained: ids checked against the input, the checkpoint's channels picked by
name, fields read with ingest's machinery up to max_tiles, and what one slide tile covers at level 0."""

import logging

import numpy as np
import pytest

from sslray.artifacts.checkpoint_meta import CheckpointMeta
from sslray.data.ingest_config import IngestConfig
from sslray.explain.config import ExplainConfig
from sslray.explain.inputs import _footprint, fed_channels, pick_ids, slides_tiling, source_images, store_images
from tests.conftest import write_png


def _meta(in_chans: int, channels: list[str], per_channel: bool = False) -> CheckpointMeta:
    n = 1 if per_channel else in_chans
    return CheckpointMeta.from_json({"model": {"name": "vit_tiny_patch16_224"}, "in_chans": in_chans,
                                     "image_size": 32, "scale": 255.0, "mean": [0.5] * n, "std": [0.25] * n,
                                     "method": "random_init", "per_channel": per_channel, "channels": channels}, "t")


def test_ids_are_checked_and_default_to_the_first_images():
    assert pick_ids(["a", "b", "c", "d"], [], 3, "store s") == ["a", "b", "c"]
    assert pick_ids(["a", "b"], ["b"], 3, "store s") == ["b"]
    many = [f"img{i}" for i in range(12)]
    with pytest.raises(ValueError, match=r"image 'x' is not in store s .*; it has: img0, .*img9, \.\.\. \(12 in all\)"):
        pick_ids(many, ["img1", "x"], 3, "store s")


def test_the_checkpoints_channels_are_picked_by_name_or_must_match_in_number():
    assert fed_channels(["DNA", "ER", "RNA"], _meta(2, ["RNA", "DNA"]), "f") == ["RNA", "DNA"]
    assert fed_channels(["DNA", "ER", "RNA"], _meta(1, [], per_channel=True), "f") == ["DNA", "ER", "RNA"]
    with pytest.raises(ValueError, match=r"f has 3 channels \['DNA', 'ER', 'RNA'\] but the checkpoint expects 2"):
        fed_channels(["DNA", "ER", "RNA"], _meta(2, ["AGP", "Mito"]), "f")


def test_a_slide_tile_covers_its_mpp_at_level0_or_the_grid_step_when_the_slide_is_gone(caplog):
    fields = {"x": [0, 64], "y": [0, 0], "mpp": [None, None]}
    assert _footprint(fields, 64, None, None) == 64
    slide = {"x": [1000, 1448, 1896], "y": [0, 0, 448], "mpp": [1.0, 1.0, 1.0]}
    assert _footprint(slide, 224, None, 0.5) == 448  # tiling.mpp_override: the level-0 resolution
    with caplog.at_level(logging.WARNING):
        assert _footprint(slide, 224, None, None) == 448  # side by side: the grid step
    assert "level-0 resolution is unknown" in caplog.text


def test_a_store_image_is_found_by_image_id_and_read_up_to_max_tiles(tiny_store, tmp_path):
    image_id = tiny_store.manifest["image_id"].iloc[-1]
    cfg = ExplainConfig(checkpoint="c", store=tiny_store.url, out=str(tmp_path / "o"), images=[image_id], max_tiles=3)
    ids, images = store_images(cfg, _meta(1, ["DNA"]))
    (image,) = list(images)
    assert ids == [image_id] and image.image_id == image_id and image.channels == ["DNA"]
    assert image.tiles.shape == (3, 1, 64, 64) and image.footprint == 64 and image.slide is None
    rows = tiny_store.manifest[tiny_store.manifest["image_id"] == image_id].iloc[:3]
    np.testing.assert_array_equal(image.xs, rows["x"]) and np.testing.assert_array_equal(image.ys, rows["y"])


def test_fields_are_read_and_tiled_as_ingest_does(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_png(tmp_path / "fields" / f"{name}.png", rng.integers(0, 255, (96, 160, 3), dtype=np.uint8))
    cfg = ExplainConfig(checkpoint="c", slides=str(tmp_path / "fields"), out=str(tmp_path / "o"), images=["b"],
                        max_tiles=4, tiling=IngestConfig(tile_size=32))
    ids, images = source_images(cfg, _meta(3, []))
    (image,) = list(images)
    assert ids == ["b"] and image.tiles.shape == (4, 3, 32, 32) and image.channels == ["R", "G", "B"]
    assert image.xs.tolist() == [0, 32, 64, 96] and image.ys.tolist() == [0, 0, 0, 0] and image.footprint == 32
    with pytest.raises(ValueError, match=f"image 'c' is not in {tmp_path}/fields"):
        source_images(ExplainConfig(checkpoint="c", slides=str(tmp_path / "fields"), out="o", images=["c"]),
                      _meta(3, []))
    listed = slides_tiling(ExplainConfig(checkpoint="c", slides=str(tmp_path / "fields" / "list.csv"), out="o"))
    assert listed.src == str(tmp_path / "fields") and listed.labels == str(tmp_path / "fields" / "list.csv")
