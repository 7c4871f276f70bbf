"""Tile store round trip, atomic publication, and refusal of incomplete stores."""

import numpy as np
import pytest

from sslray import storage
from sslray.artifacts.store_format import StoreError, chunk_layout
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


def test_unpublished_store_is_invisible_and_abort_leaves_nothing(tmp_path):
    dest = tmp_path / "s"
    writer = TileStoreWriter(str(dest), ["g"], np.uint8, 8)
    writer.append(np.zeros((4, 1, 8, 8), np.uint8), _rows(4))
    assert not dest.exists()  # built in a hidden staging directory
    with pytest.raises(StoreError, match="does not exist"):
        TileStore.open(str(dest))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_incomplete_store_is_refused_with_a_clear_error(tmp_path):
    dest = tmp_path / "s"
    (dest / "tiles.zarr").mkdir(parents=True)
    with pytest.raises(StoreError, match="incomplete"):
        TileStore.open(str(dest))


def test_existing_store_is_not_overwritten_unless_asked(tmp_path):
    dest = str(tmp_path / "s")
    w = TileStoreWriter(dest, ["g"], np.uint8, 8)
    w.append(np.ones((2, 1, 8, 8), np.uint8), _rows(2))
    w.close()
    with pytest.raises(StoreError, match="already exists"):
        TileStoreWriter(dest, ["g"], np.uint8, 8)
    w = TileStoreWriter(dest, ["g"], np.uint8, 8, overwrite=True)
    w.append(np.full((3, 1, 8, 8), 7, np.uint8), _rows(3))
    assert len(TileStore.open(dest)) == 2  # the old store stays readable until the swap
    assert w.close().read(0, 3).max() == 7
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_mismatched_tiles_are_rejected(tmp_path):
    w = TileStoreWriter(str(tmp_path / "s"), ["g"], np.uint8, 8)
    with pytest.raises(StoreError, match="do not match"):
        w.append(np.zeros((1, 2, 8, 8), np.uint8), _rows(1))
    w.abort()


def test_chunks_hold_many_tiles_and_shards_many_chunks():
    chunk, shard = chunk_layout(3 * 224 * 224)
    assert chunk >= 8 and shard == chunk * 16
    assert chunk_layout(1)[0] == 512


def test_storage_marker_helpers(tmp_path):
    url = str(tmp_path / "out")
    staging = storage.begin_output(url)
    storage.write_json(storage.join(staging, "x.json"), {"a": 1})
    assert not storage.exists(url)
    storage.publish_output(staging, url, {"n": 1})
    assert storage.is_complete(url) and storage.read_json(storage.join(url, "x.json")) == {"a": 1}
    with pytest.raises(FileExistsError):
        storage.begin_output(url)
