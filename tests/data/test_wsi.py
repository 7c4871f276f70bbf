"""Whole-slide tiling at a target resolution with tissue detection."""

import numpy as np
import pytest
import tifffile

from sslray.data.ingest import IngestConfig, IngestError, ingest_folder


def _slide(path, size=(1024, 1536)):
    """A white 'glass' slide with one square of pink 'tissue' in the top-left quarter."""
    image = np.full((*size, 3), 245, np.uint8)
    image[128:512, 128:512] = (180, 90, 150)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    return image


def test_tiles_only_tissue_at_the_target_resolution(tmp_path):
    image = _slide(tmp_path / "src" / "slide1.tif")
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=64,
                                       mpp=1.0, mpp_override=0.5))
    m = store.manifest
    # 128 level-0 px per tile at 2x downsample; tissue spans level-0 128..512 -> tiles at 128, 256, 384
    assert sorted(set(m["x"])) == [128, 256, 384] and sorted(set(m["y"])) == [128, 256, 384]
    assert len(store) == 9 and (m["tissue_fraction"] >= 0.25).all() and (m["mpp"] == 1.0).all()
    assert set(m["slide_id"]) == {"slide1"}
    tile = store.read(0, 1)[0]
    assert tile.shape == (3, 64, 64) and np.abs(tile[:, 8, 8].astype(int) - image[136, 136]).max() <= 2


def test_stride_steps_in_target_pixels_so_tiles_overlap_at_level_0(tmp_path):
    image = _slide(tmp_path / "slide1.tif")
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "slide1.tif"), out=str(tmp_path / "s"),
                                       tile_size=64, stride=32, mpp=1.0, mpp_override=0.5, min_tissue=0.9))
    m = store.manifest
    # 128 level-0 px per tile, a step of 32 x 2 = 64: the tiles wholly inside tissue 128..512 start at 128..384
    assert sorted(set(m["x"])) == sorted(set(m["y"])) == [128, 192, 256, 320, 384] and len(store) == 25
    assert set(m["source"]) == {"slide1.tif"} and set(m["slide_id"]) == {"slide1"}
    row = m[(m.x == 192) & (m.y == 256)].index[0]
    assert np.abs(store.read(row, row + 1)[0][:, 8, 8].astype(int) - image[256 + 16, 192 + 16]).max() <= 2


def test_slide_without_resolution_metadata_needs_an_override(tmp_path):
    _slide(tmp_path / "src" / "slide1.tif")
    with pytest.raises(IngestError, match=r"slide1.tif: the slide has no resolution metadata.*--mpp-override"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=64, mpp=1.0))
    assert not (tmp_path / "s").exists()


def test_finer_than_scanned_is_refused(tmp_path):
    _slide(tmp_path / "src" / "slide1.tif")
    with pytest.raises(IngestError, match="finer than the scan"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=64,
                                   mpp=0.25, mpp_override=0.5))


def test_real_svs_at_1_mpp(test_data, tmp_path):
    pytest.importorskip("tiffslide")
    src = tmp_path / "src"
    src.mkdir()
    (src / "cmu1.svs").symlink_to(test_data / "wsi" / "CMU-1-Small-Region.svs")
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=224, mpp=1.0))
    m = store.manifest
    # 2220 x 2967 px at 0.499 mpp; 224 px at 1.0 mpp = 449 level-0 px -> a 4 x 6 grid, background dropped
    assert 0 < len(store) <= 24 and (m["mpp"] == 1.0).all() and set(m["slide_id"]) == {"cmu1"}
    assert store.read(0, len(store)).mean() < 235  # tissue, not white glass


def test_slide_without_tissue_is_named(tmp_path):
    _slide(tmp_path / "src" / "good.tif")
    blank = tmp_path / "src" / "blank.tif"
    tifffile.imwrite(blank, np.full((1024, 1536, 3), 245, np.uint8), tile=(256, 256), photometric="rgb")
    with pytest.raises(IngestError, match=r"blank.tif: no tile has at least 25% tissue"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=64,
                                   mpp=1.0, mpp_override=0.5))
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=64,
                                       mpp=1.0, mpp_override=0.5, on_error="skip"))
    assert set(store.manifest["slide_id"]) == {"good"} and len(store) == 9
