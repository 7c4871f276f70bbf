"""Reading a published tile store: ``TileStore.open(url)``, views by ``Selection``, checked reads.

A store is visible to readers only once complete: local stores are built in a hidden sibling
directory and renamed into place; remote stores are written in place and published by a
``_SUCCESS`` marker written last. ``TileStore.open`` refuses anything without the marker,
saying what is there instead. The layout is in ``sslray.artifacts.store_format``; the writer in
``sslray.artifacts.tile_store_writer``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sslray import storage
from sslray.artifacts.checksums import checked_read
from sslray.artifacts.kinds import require_artifact
from sslray.artifacts.selection import Selection
from sslray.artifacts.store_format import MANIFEST, TILES, StoreError, StoreInfo, open_zarr_group


class TileStore:
    """A complete, published tile store, or a selection of its tiles and channels.

    Open with ``TileStore.open(url)``; ``select`` gives a view that every stage reads the
    same way (``len``, ``info``, ``manifest``, ``read``). No Ray here: the Ray Data reader is
    ``sslray.data.datasource.read_tile_store(store)``.
    """

    def __init__(self, url: str, info: StoreInfo, manifest: pa.Table, rows: np.ndarray | None = None,
                 channel_index: list[int] | None = None, selection: Selection | None = None) -> None:
        self.url = url
        self.info = info
        self._store_manifest = manifest  # the whole store's manifest; row i <-> tiles[i]
        self.rows = rows  # store rows in this view, None for all
        self.channel_index = channel_index  # store channels in this view, None for all
        self.selection = selection or Selection()
        self._manifest = manifest if rows is None else manifest.take(pa.array(rows))

    def select(self, selection: Selection) -> TileStore:
        """A view of the tiles and channels ``selection`` names (of the whole store)."""
        if selection.is_everything:
            return TileStore(self.url, self.info, self._store_manifest)
        rows = selection.rows(self._store_manifest, self.url)
        channel_index = selection.channel_index(self.info.channels, self.url)
        info = self.info
        if channel_index is not None:
            pick = lambda values: [values[i] for i in channel_index]  # noqa: E731
            info = replace(info, channels=pick(info.channels), mean=pick(info.mean), std=pick(info.std),
                           p01=pick(info.p01), p99=pick(info.p99))
        info = replace(info, n_tiles=len(rows))
        return TileStore(self.url, info, self._store_manifest, rows if len(rows) < len(self._store_manifest) else None,
                         channel_index, selection)

    @classmethod
    def open(cls, url: str) -> TileStore:
        url = str(url)
        require_artifact(url, ("tile_store",), missing=StoreError, wrong=StoreError)
        attrs = dict(open_zarr_group(storage.join(url, TILES), "r").attrs)
        try:
            info = StoreInfo(**attrs["sslray"])
        except (KeyError, TypeError) as err:
            raise StoreError(f"tile store {url}: attributes are missing or malformed ({err})") from None
        manifest = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(url, MANIFEST))))
        if manifest.num_rows != info.n_tiles:
            raise StoreError(f"tile store {url}: manifest has {manifest.num_rows} rows but {info.n_tiles} tiles")
        return cls(url, info, manifest)

    @property
    def manifest(self):
        """The manifest as a pandas DataFrame (row i describes tile i)."""
        return self._manifest.to_pandas()

    @property
    def manifest_table(self) -> pa.Table:
        """This view's rows of the manifest (``tile_id`` still names the store row)."""
        return self._manifest

    @property
    def store_manifest(self) -> pa.Table:
        """The whole store's manifest, whatever this view selects."""
        return self._store_manifest

    def __len__(self) -> int:
        return self.info.n_tiles  # of this view

    def tiles(self):
        return open_zarr_group(storage.join(self.url, TILES), "r")["tiles"]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tiles ``start:stop`` of this view, (N, C, H, W); a damaged shard is a StoreError naming it."""
        array = self.tiles()
        if self.rows is None:
            with checked_read(self.url, array, range(start, min(stop, len(self._store_manifest)))):
                tiles = np.asarray(array[start:stop])
        else:
            rows = self.rows[start:stop]
            tiles = None
            if len(rows):
                with checked_read(self.url, array, range(int(rows[0]), int(rows[-1]) + 1)):
                    tiles = np.asarray(array[int(rows[0]) : int(rows[-1]) + 1])[rows - rows[0]]
        if tiles is None:
            return np.empty((0, self.info.n_channels, self.info.tile_size, self.info.tile_size), self.info.dtype)
        return tiles if self.channel_index is None else tiles[:, self.channel_index]


def split_at_shards(rows: np.ndarray, shard_tiles: int) -> list[np.ndarray]:
    """Sorted store rows split where a shard ends: the unit one read (one object) serves."""
    rows = np.asarray(rows, dtype=np.int64)
    return [g for g in np.split(rows, np.flatnonzero(np.diff(rows // shard_tiles)) + 1) if len(g)]


def manifest_sha256(url: str) -> str:
    """SHA-256 of a store's ``manifest.parquet``: the lineage every checkpoint and MLflow run records."""
    return hashlib.sha256(storage.read_bytes(storage.join(url, MANIFEST))).hexdigest()
