"""ExplainConfig: one input, a class only with a head, positive counts, no image twice; checked when made."""

import pytest

from sslray.config import from_dict
from sslray.explain.config import ExplainConfig


@pytest.mark.parametrize("keys, message", [
    ({"out": "o"}, "checkpoint is required"),
    ({"checkpoint": "c", "store": "s"}, "out is required"),
    ({"checkpoint": "c", "out": "o"}, "give exactly one input"),
    ({"checkpoint": "c", "out": "o", "store": "s", "slides": "x"}, "give exactly one input"),
    ({"checkpoint": "c", "out": "o", "store": "s", "max_tiles": 0}, "max_tiles must be >= 1, got 0"),
    ({"checkpoint": "c", "out": "o", "store": "s", "class_name": "TUM"}, "class_name 'TUM' names a class of a linear "
                                                                          "head: give head"),
    ({"checkpoint": "c", "out": "o", "store": "s", "images": ["a", "a"]}, "images lists an image twice"),
])
def test_bad_settings_are_refused_when_made(keys, message):
    with pytest.raises(ValueError, match=message):
        ExplainConfig(**keys)


def test_slides_take_ingests_tiling_keys():
    cfg = from_dict(ExplainConfig, {"checkpoint": "c", "out": "o", "slides": "s.svs", "tiling": {"mpp": 1.0}})
    assert cfg.tiling.mpp == 1.0 and cfg.tiling.tile_size == 224 and cfg.n_images == 3 and cfg.max_tiles == 256
