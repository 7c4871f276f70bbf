"""Intensity scaling: dataset-level percentile clipping, float scales, NaNs named by file."""

import json

import numpy as np
import pytest
import tifffile

from sslray.data.ingest import IngestConfig, IngestError, ingest_folder
from sslray.data.intensity import IntensityError, Scaling, calibrate, sample_for_calibration, to_storable


def test_calibrate_matches_numpy_percentiles_on_the_pixels():
    rng = np.random.default_rng(0)
    images = [rng.gamma(2.0, 50.0, (2, 60, 60)).astype(np.float32) * np.array([1, 10]).reshape(2, 1, 1)
              for _ in range(3)]  # 3600 px per image: below the per-image sample, so every pixel is used once-ish
    low, high = calibrate(images, (1.0, 99.0), log1p=False)
    pixels = np.concatenate([im.reshape(2, -1) for im in images], axis=1)
    ref_low, ref_high = np.percentile(pixels, [1, 99], axis=1)
    np.testing.assert_allclose(low, ref_low, rtol=0.1)
    np.testing.assert_allclose(high, ref_high, rtol=0.1)
    assert high[1] > 5 * high[0]  # per channel, not pooled


def test_clipping_maps_low_to_zero_high_to_full_scale_and_keeps_uint8():
    image = np.array([[[0, 10, 20, 30]]], dtype=np.uint16)
    out = to_storable(image, "x.tif", Scaling(low=(10.0,), high=(20.0,)))
    assert out.dtype == np.uint16 and out[0, 0].tolist() == [0, 0, 65535, 65535]
    out8 = to_storable(image.astype(np.uint8), "x.png", Scaling(low=(10.0,), high=(30.0,)))
    assert out8.dtype == np.uint8 and out8[0, 0].tolist() == [0, 0, 128, 255]


def test_nan_pixels_are_named():
    image = np.ones((1, 4, 4), np.float32)
    image[0, 1, 1] = np.nan
    with pytest.raises(IntensityError, match="bad.tiff: image contains NaN"):
        to_storable(image, "bad.tiff", Scaling(float_max=(2.0,)))


def test_large_sets_are_sampled_evenly_and_reproducibly():
    picks = sample_for_calibration(1000)
    assert len(picks) == 32 and picks == sample_for_calibration(1000) and max(picks) > 500
    assert sample_for_calibration(5) == [0, 1, 2, 3, 4]


def test_ingest_with_clip_percentiles_records_the_calibration(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        counts = np.stack([rng.gamma(1.0, 5.0, (64, 64)), rng.gamma(1.0, 500.0, (64, 64))]).astype(np.float32)
        tifffile.imwrite(src / f"imc{i}.tiff", counts)
    (src / "nan.tiff").write_bytes(b"")
    bad = np.full((2, 64, 64), np.nan, np.float32)
    tifffile.imwrite(src / "nan.tiff", bad)
    with pytest.raises(IngestError, match="nan.tiff: .*NaN"):
        ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32,
                                   clip_percentiles=[0.5, 99.5]))
    (src / "nan.tiff").unlink()
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32,
                                       clip_percentiles=[0.5, 99.5], overwrite=True))
    attrs = json.loads((tmp_path / "s" / "tiles.zarr" / "zarr.json").read_text())["attributes"]["ingest"]
    assert attrs["clip_percentiles"] == [0.5, 99.5] and len(attrs["high"]) == 2 and attrs["high"][1] > attrs["high"][0]
    tiles = store.read(0, len(store))
    for c in range(2):  # about 0.5% of pixels clip at each end, channel by channel
        assert 0.001 < (tiles[:, c] == 65535).mean() < 0.02
    assert store.info.p99[0] == pytest.approx(store.info.p99[1], abs=0.1)  # channels now on one scale


def test_clip_percentiles_are_validated():
    with pytest.raises(ValueError, match="clip_percentiles must be two values"):
        IngestConfig(clip_percentiles=[99.0, 1.0])
