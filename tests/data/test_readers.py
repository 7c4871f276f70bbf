"""Readers: every format to (C, H, W), sizes from headers, channel files stacked, bad files named."""

import numpy as np
import pytest
import tifffile

from sslray.data.ingest import IngestConfig, IngestError, ingest_folder
from sslray.data.readers import (
    ImageReadError,
    image_id_of,
    natural_key,
    read_channel_files,
    read_channel_folder,
    read_image,
)
from tests.conftest import write_png
from tests.data.images import marker_field


def test_readers_give_channels_first(tmp_path):
    gray = write_png(tmp_path / "g.png", np.zeros((20, 30), np.uint8))
    assert read_image(gray).shape == (1, 20, 30)
    stack = np.arange(5 * 20 * 30, dtype=np.uint16).reshape(5, 20, 30)
    tifffile.imwrite(tmp_path / "m.tif", stack, photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "m.tif"), stack)
    with pytest.raises(ImageReadError, match="unsupported image format"):
        read_image(tmp_path / "x.bmp")
    nan = np.full((1, 20, 20), np.nan, np.float32)
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(tmp_path / "nan.tif")


def test_image_size_reads_headers_for_png_and_tiff(tmp_path):
    from sslray.data.readers import image_size

    png = write_png(tmp_path / "a.png", np.zeros((20, 30, 3), np.uint8))
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((5, 40, 50), np.uint16), photometric="minisblack")
    assert image_size(png) == (20, 30) and image_size(tmp_path / "m.tif") == (40, 50)
    from sslray.quickstart import default_tile_size

    assert default_tile_size(str(tmp_path)) == 20


def test_npy_arrays_channels_last_or_first_and_pickles_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    chw = rng.integers(0, 65535, (5, 40, 40), dtype=np.uint16)
    np.save(src / "rgb.npy", hwc)
    np.save(src / "multi.npy", chw)
    assert read_image(src / "rgb.npy").shape == (3, 40, 40) and read_image(src / "multi.npy").shape == (5, 40, 40)
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32,
                                       on_error="skip"))
    assert store.info.channels == [f"ch{i}" for i in range(5)] and len(store) == 1  # rgb.npy skipped: 3 channels
    np.testing.assert_array_equal(store.read(0, 1)[0], chw[:, :32, :32])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match="obj.npy: cannot decode"):
        read_image(tmp_path / "obj.npy")


def test_hdf5_without_images_is_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    (tmp_path / "src").mkdir()
    with h5py.File(tmp_path / "src" / "bad.h5", "w") as f:
        f.create_dataset("Other", data=np.zeros(3))
    with pytest.raises(IngestError, match="bad.h5: HDF5 file has no 'Images' dataset"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32))


def test_channel_folder_stacks_markers_in_natural_order_or_as_asked(tmp_path):
    planes = marker_field(tmp_path / "fov", ["ch10", "ch2", "DAPI"], size=16)
    image, names = read_channel_folder(tmp_path / "fov")
    assert names == ["DAPI", "ch2", "ch10"] and image.shape == (3, 16, 16)
    np.testing.assert_array_equal(image[2], planes["ch10"])
    picked, names = read_channel_folder(tmp_path / "fov", ["ch2"])
    assert names == ["ch2"] and picked.shape == (1, 16, 16)


def test_channel_files_name_missing_channels_and_planes_that_do_not_match(tmp_path):
    marker_field(tmp_path / "fov", ["a", "b"], size=16)
    tifffile.imwrite(tmp_path / "fov" / "c.tif", np.zeros((8, 8), np.uint16))
    files = {p.stem: p for p in (tmp_path / "fov").iterdir()}
    with pytest.raises(ImageReadError, match=r"field1: channel file\(s\) \['z'\] not found"):
        read_channel_files(files, ["a", "z"], "field1")
    with pytest.raises(ImageReadError, match=r"c.tif: shape \(8, 8\) uint16 differs"):
        read_channel_files(files, None, "field1")


def test_pixel_limit_refuses_large_images_before_decoding(tmp_path):
    png = write_png(tmp_path / "big.png", np.zeros((40, 50), np.uint8))
    assert read_image(png, max_pixels=2000).shape == (1, 40, 50)
    with pytest.raises(ImageReadError, match="big.png: image of 50 x 40 = 2,000 pixels is over the limit of 1,999"):
        read_image(png, max_pixels=1999)


def test_image_ids_drop_the_suffix_and_keep_the_field_index():
    assert image_id_of("a/b.tif") == "a/b" and image_id_of("a/patches.h5#3") == "a/patches#3"
    assert image_id_of("plate/r01c01f01p01-ch*sk1") == "plate/r01c01f01p01-ch*sk1"  # a channel-files field
    assert sorted(["ch10", "ch2", "ch1"], key=natural_key) == ["ch1", "ch2", "ch10"]
