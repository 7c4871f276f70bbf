"""Backward-compatible names for the tile store format, which now lives in ``sslray.artifacts``.

Re-exports only: the layout and ``StoreInfo`` are in ``sslray.artifacts.store_format``, the
reader in ``sslray.artifacts.tile_store``, the writer in ``sslray.artifacts.tile_store_writer``.
New code imports from there; the Ray Data reader is ``sslray.data.datasource.read_tile_store``.
"""

from sslray.artifacts.store_format import (  # noqa: F401
    CHUNKS_PER_SHARD,
    COMPRESSION,
    FORMAT_VERSION,
    MANIFEST,
    TARGET_CHUNK_BYTES,
    TILES,
    StoreError,
    StoreInfo,
    chunk_layout,
    dtype_scale,
    open_zarr_group,
)
from sslray.artifacts.tile_store import TileStore, manifest_sha256  # noqa: F401
from sslray.artifacts.tile_store_writer import TileStoreWriter, create_tiles_array  # noqa: F401
