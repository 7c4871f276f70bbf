"""The tile store layout: chunk sizes, dtype scales, what StoreInfo derives, the Zarr group."""

import numpy as np
import pytest

from sslray.artifacts.store_format import StoreError, StoreInfo, chunk_layout, dtype_scale, open_zarr_group


def test_chunks_hold_many_tiles_and_shards_many_chunks():
    chunk, shard = chunk_layout(3 * 224 * 224)
    assert chunk >= 8 and shard == chunk * 16
    assert chunk_layout(1)[0] == 512
    assert chunk_layout(64 << 20)[0] == 1  # a tile bigger than a chunk still gets one per chunk


def test_only_uint8_and_uint16_stores_exist():
    assert dtype_scale(np.uint8) == 255.0 and dtype_scale(np.dtype("uint16")) == 65535.0
    with pytest.raises(StoreError, match="uint8 or uint16, got float32"):
        dtype_scale(np.float32)


def test_store_info_derives_channels_and_tile_bytes():
    info = StoreInfo(n_tiles=4, channels=["DNA", "ER", "RNA"], dtype="uint16", tile_size=8, scale=65535.0)
    assert info.n_channels == 3 and info.tile_bytes == 3 * 8 * 8 * 2
    assert info.format_version == 2


def test_a_zarr_group_round_trips_its_attributes(tmp_path):
    group = open_zarr_group(str(tmp_path / "g.zarr"), "w")
    group.attrs["sslray"] = {"n_tiles": 1}
    assert dict(open_zarr_group(str(tmp_path / "g.zarr"), "r").attrs) == {"sslray": {"n_tiles": 1}}
