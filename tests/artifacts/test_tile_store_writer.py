"""Writing a tile store: shape checks, statistics, atomic publication, overwrite only when asked."""

import json

import numpy as np
import pytest

from sslray.artifacts.store_format import StoreError
from sslray.artifacts.tile_store import TileStore
from sslray.artifacts.tile_store_writer import TileStoreWriter, _ChannelStats


def _rows(n, offset=0):
    return [{"source": f"img{(i + offset) // 4}.png", "image_id": f"img{(i + offset) // 4}", "x": 0, "y": 0,
             "label": "a" if i % 2 else "b"} for i in range(n)]


def test_unpublished_store_is_invisible_and_abort_leaves_nothing(tmp_path):
    dest = tmp_path / "s"
    writer = TileStoreWriter(str(dest), ["g"], np.uint8, 8)
    writer.append(np.zeros((4, 1, 8, 8), np.uint8), _rows(4))
    assert not dest.exists()  # built in a hidden staging directory
    with pytest.raises(StoreError, match="does not exist"):
        TileStore.open(str(dest))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


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


def test_rows_must_match_tiles_and_an_empty_store_is_not_published(tmp_path):
    w = TileStoreWriter(str(tmp_path / "s"), ["g"], np.uint8, 8)
    with pytest.raises(StoreError, match="2 tiles but 1 manifest rows"):
        w.append(np.zeros((2, 1, 8, 8), np.uint8), _rows(1))
    with pytest.raises(StoreError, match="no tiles were written"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_compression_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(StoreError, match=r"compression must be one of \['lz4', 'zstd'\], got 'gzip'"):
        TileStoreWriter(str(tmp_path / "s"), ["g"], np.uint8, 8, compression="gzip")
    assert list(tmp_path.iterdir()) == []


def test_the_manifest_is_the_union_of_row_keys_and_the_summary_records_the_format(tmp_path):
    w = TileStoreWriter(str(tmp_path / "s"), ["g"], np.uint8, 8, chunk_checksums=False)
    w.append(np.zeros((2, 1, 8, 8), np.uint8), [{"image_id": "a"}, {"image_id": "b", "well": "A01"}])
    store = w.close()
    assert store.manifest_table.column_names == ["tile_id", "image_id", "well"]
    assert store.manifest_table.column("well").to_pylist() == [None, "A01"]
    success = json.loads((tmp_path / "s" / "_SUCCESS").read_text())
    assert success == {"kind": "tile_store", "n_tiles": 2, "format_version": 1}


def test_channel_stats_are_exact_for_mean_and_std():
    rng = np.random.default_rng(1)
    tiles = rng.random((10, 2, 4, 4)).astype(np.float32)
    tiles[:, 1] = 0.5  # a flat channel: std floored, not zero
    stats = _ChannelStats(2)
    stats.update(tiles[:6])
    stats.update(tiles[6:])
    summary = stats.summary()
    assert summary["mean"] == pytest.approx(tiles.mean(axis=(0, 2, 3)).tolist(), abs=1e-6)
    assert summary["std"][0] == pytest.approx(float(tiles[:, 0].std()), abs=1e-6) and summary["std"][1] == 1e-6
    assert summary["p01"][1] == summary["p99"][1] == 0.5
