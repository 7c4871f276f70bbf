"""Tiling: one source into its part (grid from the top-left, manifest rows, channel names), bad files named."""

import numpy as np
import pytest
import tifffile

from sslray.data.ingest import IngestConfig, IngestError, ingest_folder
from sslray.data.parts import load_part, read_part
from sslray.data.readers import read_image
from sslray.data.sources import SourceImage
from sslray.data.tiling import _channel_names, tile_image, tile_source
from tests.conftest import write_png
from tests.data.images import marker_field, rgb_folder


def test_subfolder_labels_and_tiling(tmp_path):
    store = ingest_folder(IngestConfig(workers=0, src=str(rgb_folder(tmp_path)), out=str(tmp_path / "s"), tile_size=32))
    m = store.manifest
    # a.png 100x70 -> 3x2 tiles, b.png 64x64 -> 2x2 tiles; ragged borders dropped
    assert len(store) == 10 and store.info.channels == ["R", "G", "B"]
    assert sorted(m["label"].unique()) == ["normal", "tumor"]
    assert set(zip(m.loc[m.source == "tumor/a.png", "x"], m.loc[m.source == "tumor/a.png", "y"])) == {
        (x, y) for x in (0, 32, 64) for y in (0, 32)}
    original = read_image(tmp_path / "src" / "tumor" / "a.png")
    row = m[(m.source == "tumor/a.png") & (m.x == 32) & (m.y == 32)].index[0]
    np.testing.assert_array_equal(store.read(row, row + 1)[0], original[:, 32:64, 32:64])


def test_channel_folders_stack_markers_in_name_order(tmp_path):
    a = marker_field(tmp_path / "src" / "tumor" / "fov1", ["CD8", "DAPI", "PanCK"], seed=1)
    marker_field(tmp_path / "src" / "stroma" / "fov2", ["CD8", "DAPI", "PanCK"], seed=2)
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32,
                                       layout="channel-folders"))
    assert store.info.channels == ["CD8", "DAPI", "PanCK"] and store.info.dtype == "uint16"
    m = store.manifest
    assert len(store) == 8 and set(m["label"]) == {"tumor", "stroma"}
    row = m[(m.source == "tumor/fov1") & (m.x == 32) & (m.y == 0)].index[0]
    np.testing.assert_array_equal(store.read(row, row + 1)[0, 1], a["DAPI"][0:32, 32:64])


def test_hdf5_patch_files_images_and_names(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 65535, (5, 4, 40, 40), dtype=np.uint16)
    (tmp_path / "src" / "spotA").mkdir(parents=True)
    with h5py.File(tmp_path / "src" / "spotA" / "patches.h5", "w") as f:
        f.create_dataset("Images", data=images, chunks=(1, 4, 40, 40))
        f.create_dataset("Names", data=np.array([b"DNA1", b"CD3", b"CD20", b"Ki67"]))
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32))
    m = store.manifest
    assert store.info.channels == ["DNA1", "CD3", "CD20", "Ki67"] and len(store) == 5
    assert m["image_id"].tolist() == [f"spotA/patches#{i}" for i in range(5)] and set(m["label"]) == {"spotA"}
    np.testing.assert_array_equal(store.read(0, 5), images[:, :, :32, :32])


def test_float_images_need_an_explicit_scale(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    counts = np.stack([np.full((32, 32), 50.0), np.full((32, 32), 5.0)]).astype(np.float32)
    tifffile.imwrite(src / "imc.tiff", counts)
    with pytest.raises(IngestError, match=r"imc.tiff: float image with values in \[5, 50\]; pass --float-max"):
        ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32))
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32, float_max=[100.0, 10.0]))
    assert store.info.dtype == "uint16"
    np.testing.assert_array_equal(store.read(0, 1)[0, :, 0, 0], [round(0.5 * 65535)] * 2)
    logged = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "l"), tile_size=32, log1p=True,
                                        float_max=[float(np.log1p(50.0))]))
    assert logged.read(0, 1)[0, 0, 0, 0] == 65535


def test_tile_image_cuts_a_grid_and_labels_every_row():
    image = np.zeros((2, 70, 100), np.uint8)
    image[1, :32, :32] = 255  # foreground only in channel 1, top-left tile
    source = SourceImage(path=None, rel="tumor/a.png", label="tumor", group="P1", extra={"well": "A01"})
    tiles, rows = tile_image(image, source, 32, foreground_channel=1)
    assert tiles.shape == (6, 2, 32, 32) and tiles.flags["C_CONTIGUOUS"]
    assert [(r["x"], r["y"]) for r in rows] == [(0, 0), (32, 0), (64, 0), (0, 32), (32, 32), (64, 32)]
    assert {r["image_id"] for r in rows} == {"tumor/a"} and rows[0]["well"] == "A01" and rows[0]["group"] == "P1"
    assert [r["tissue_fraction"] for r in rows] == [1.0, 0, 0, 0, 0, 0]


def test_a_stride_below_the_tile_size_overlaps_tiles_and_drops_the_ragged_border():
    image = np.arange(70 * 100, dtype=np.uint16).reshape(1, 70, 100)
    tiles, rows = tile_image(image, SourceImage(path=None, rel="a.tif"), 32, stride=16)
    # x 0..64 (a tile at 80 would end past 100), y 0..32 (48 + 32 > 70): the last 4 and 6 pixels are dropped
    assert [(r["x"], r["y"]) for r in rows] == [(x, y) for y in (0, 16, 32) for x in (0, 16, 32, 48, 64)]
    np.testing.assert_array_equal(tiles[6], image[:, 16:48, 16:48])
    sparse, rows = tile_image(image, SourceImage(path=None, rel="a.tif"), 32, stride=48)
    assert [(r["x"], r["y"]) for r in rows] == [(0, 0), (48, 0)]
    default, _ = tile_image(image, SourceImage(path=None, rel="a.tif"), 32, stride=None)
    np.testing.assert_array_equal(default, tile_image(image, SourceImage(path=None, rel="a.tif"), 32, stride=32)[0])


def test_ingest_with_a_stride_stores_the_overlapping_grid(tmp_path):
    store = ingest_folder(IngestConfig(workers=0, src=str(rgb_folder(tmp_path)), out=str(tmp_path / "s"),
                                       tile_size=32, stride=16))
    m = store.manifest
    assert len(store) == 15 + 9  # a.png 100x70: 5 x 3 origins; b.png 64x64: 3 x 3
    row = m[(m.source == "normal/b.png") & (m.x == 16) & (m.y == 32)].index[0]
    np.testing.assert_array_equal(store.read(row, row + 1)[0], read_image(tmp_path / "src" / "normal" / "b.png")[:, 32:, 16:48])


def test_tile_source_returns_a_failed_result_naming_the_file_not_an_exception(tmp_path):
    src = rgb_folder(tmp_path)
    (src / "bad.png").write_bytes(b"garbage")
    cfg = IngestConfig(src=str(src), out=str(tmp_path / "s"), tile_size=32)
    staging = str(tmp_path / "staging")
    failed = tile_source(SourceImage(src / "bad.png", "bad.png"), cfg, staging)
    assert not failed.ok and failed.reason.startswith(f"{src / 'bad.png'}: cannot decode")
    assert load_part(staging, "bad.png") is None
    done = tile_source(SourceImage(src / "normal" / "b.png", "normal/b.png", label="normal"), cfg, staging)
    assert done.ok and done.n_tiles == 4 and done.channels == ["R", "G", "B"] and done.dtype == "uint8"
    assert load_part(staging, "normal/b.png") == done
    (tiles, rows), = read_part(staging, done, 32)
    np.testing.assert_array_equal(tiles[3], read_image(src / "normal" / "b.png")[:, 32:, 32:])
    assert rows[3]["label"] == "normal"


def test_a_source_smaller_than_one_tile_fails_by_name_and_leaves_no_part(tmp_path):
    write_png(tmp_path / "small.png", np.zeros((20, 40, 3), np.uint8))
    cfg = IngestConfig(src=str(tmp_path), out=str(tmp_path / "s"), tile_size=32)
    result = tile_source(SourceImage(tmp_path / "small.png", "small.png"), cfg, str(tmp_path / "staging"))
    assert not result.ok and result.n_tiles == 0
    assert result.reason == f"{tmp_path / 'small.png'}: image 40x20 is smaller than the tile size 32"
    assert load_part(str(tmp_path / "staging"), "small.png") is None


def test_channel_names_default_by_count_or_come_from_the_config():
    cfg = IngestConfig(src="src")
    assert _channel_names(cfg, np.zeros((1, 8, 8))) == ["gray"]
    assert _channel_names(cfg, np.zeros((3, 8, 8))) == ["R", "G", "B"]
    assert _channel_names(cfg, np.zeros((2, 8, 8))) == ["ch0", "ch1"]
    named = IngestConfig(src="src", channels=["DNA", "actin"])
    assert _channel_names(named, np.zeros((2, 8, 8))) == ["DNA", "actin"]
    with pytest.raises(IngestError, match="src: 2 channel names given but images have 3 channels"):
        _channel_names(named, np.zeros((3, 8, 8)))
