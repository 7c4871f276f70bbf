"""The ingest settings: refused when made, and the reader chosen per file."""

from pathlib import Path

import pytest

from sslray.data.ingest_config import IngestConfig


@pytest.mark.parametrize("bad, message", [
    ({"workers": -1}, "workers must be 0"),
    ({"tile_size": 4}, "tile_size must be >= 8"),
    ({"min_tissue": 1.5}, r"min_tissue must be in \[0, 1\]"),
    ({"float_max": [0.0]}, "float_max must list positive values"),
    ({"compression": "gzip"}, "compression must be one of"),
    ({"clip_percentiles": [99, 1]}, "clip_percentiles must be two values"),
    ({"max_pixels": 0}, "max_pixels must be a positive number"),
    ({"stride": 0}, "stride must be >= 1 pixel"),
    ({"layout": "channel-files", "channel_pattern": "-ch(?P<channel>[0-9]+"}, "is not a valid regex"),
])
def test_bad_settings_are_refused_when_the_config_is_made(bad, message):
    with pytest.raises(ValueError, match=message):
        IngestConfig(src="src", out="dest", **bad)




def test_the_reader_is_guessed_from_the_file_name_unless_forced():
    cfg = IngestConfig(src="src")
    assert [cfg.reader_for(Path(n)) for n in ("a.svs", "a.tif", "a.h5", "a.png")] == ["slide", "image", "hdf5", "image"]
    assert IngestConfig(src="src", magnification=20).reader_for(Path("a.tiff")) == "slide"  # a target makes TIFFs slides
    assert IngestConfig(src="src", format="image").reader_for(Path("a.svs")) == "image"


def test_scaling_and_slide_tiling_carry_the_settings():
    cfg = IngestConfig(src="src", tile_size=64, float_max=[10.0, 20.0], log1p=True, mpp=0.5, min_tissue=0.1, stride=48)
    assert cfg.scaling.float_max == (10.0, 20.0) and cfg.scaling.log1p
    tiling = cfg.slide_tiling
    assert (tiling.tile_size, tiling.mpp, tiling.min_tissue, tiling.stride) == (64, 0.5, 0.1, 48)
    assert IngestConfig(src="src").stride is None and IngestConfig(src="src").slide_tiling.stride is None
