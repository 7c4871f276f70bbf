"""Data: readers, ingest, the tile store and its Ray Data view, view transforms.

Importing this package does not import Ray (methods use ``sslray.data.transforms``);
the Ray datasource is imported only by ``TileStore.to_ray_dataset``.
"""

from sslray.data.store import StoreError, TileStore

__all__ = ["StoreError", "TileStore"]
