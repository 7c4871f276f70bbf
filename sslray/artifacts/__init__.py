"""The artifacts stages hand over: every format one stage writes and a later stage reads.

Stages never import each other to learn a format; they import it from here:

- ``kinds``: what is at a URL (``require_artifact``), by the kind recorded in ``_SUCCESS``;
- ``store_format``, ``tile_store``, ``tile_store_writer``, ``selection``, ``checksums``: the tile
  store (``StoreInfo``, ``TileStore``, ``TileStoreWriter``, ``Selection``, per-file SHA-256 and
  per-chunk crc32c);
- ``checkpoint``: ``CheckpointMeta`` (``sslray.json``) and the checkpoint files;
- ``vector_table``, ``embeddings``, ``spot_table``: tables of one vector per row
  (``EmbeddingsTable``, ``SpotTable``).

The formats are described in docs/data_contracts.md. Nothing here imports Ray: the Ray Data
reader of a tile store lives in ``sslray.data.datasource``. This package's ``__init__`` only
re-exports the kind checks, so importing it stays cheap.
"""

from sslray.artifacts.kinds import (
    CHECKPOINT_FILES,
    LOOKS_FOR,
    MAKE,
    NAMES,
    PROBE_TABLES,
    RERUN,
    TILE_STORE_FILES,
    describe,
    require_artifact,
    unfinished_kind,
)

__all__ = ["CHECKPOINT_FILES", "LOOKS_FOR", "MAKE", "NAMES", "PROBE_TABLES", "RERUN", "TILE_STORE_FILES", "describe",
           "require_artifact", "unfinished_kind"]
