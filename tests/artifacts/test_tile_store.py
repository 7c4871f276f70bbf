"""Reading a tile store: what the writer wrote comes back in order, and incomplete stores are refused."""

import numpy as np
import pytest

from sslray.artifacts.store_format import StoreError
from sslray.artifacts.tile_store import TileStore
from sslray.artifacts.tile_store_writer import TileStoreWriter


def _rows(n, offset=0):
    return [{"source": f"img{(i + offset) // 4}.png", "image_id": f"img{(i + offset) // 4}", "x": 0, "y": 0,
             "label": "a" if i % 2 else "b"} for i in range(n)]


def test_round_trip_preserves_pixels_order_and_manifest(tmp_path):
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 65535, size=(37, 3, 16, 16), dtype=np.uint16)
    writer = TileStoreWriter(str(tmp_path / "s"), ["a", "b", "c"], np.uint16, 16)
    writer.shard_tiles = 8  # force several shards and a partial last one
    writer.append(tiles[:20], _rows(20))
    writer.append(tiles[20:], _rows(17, 20))
    store = writer.close()
    assert len(store) == 37 and store.info.channels == ["a", "b", "c"] and store.info.scale == 65535.0
    np.testing.assert_array_equal(store.read(0, 37), tiles)
    manifest = store.manifest
    assert manifest["tile_id"].tolist() == list(range(37))
    assert manifest["image_id"].iloc[36] == "img9"
    expected_mean = (tiles / 65535.0).mean(axis=(0, 2, 3))
    assert store.info.mean == pytest.approx(expected_mean.tolist(), abs=1e-5)
    reopened = TileStore.open(str(tmp_path / "s"))
    assert reopened.info == store.info


def test_incomplete_store_is_refused_with_a_clear_error(tmp_path):
    dest = tmp_path / "s"
    (dest / "tiles.zarr").mkdir(parents=True)
    with pytest.raises(StoreError, match="incomplete"):
        TileStore.open(str(dest))
