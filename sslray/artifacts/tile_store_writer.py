"""Writing a tile store: tiles appended shard by shard, statistics, checksums, atomic publish.

Only the ingest stage writes stores, but the writer is part of the format (the array layout,
the ``StoreInfo`` attributes, ``checksums.json``, the ``_SUCCESS`` summary), so it lives beside
the reader.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sslray import storage
from sslray.artifacts.checksums import write_checksums
from sslray.artifacts.store_format import (
    COMPRESSION,
    FORMAT_VERSION,
    MANIFEST,
    TILES,
    StoreError,
    StoreInfo,
    chunk_layout,
    dtype_scale,
    open_zarr_group,
)
from sslray.artifacts.tile_store import TileStore


class TileStoreWriter:
    """Appends tiles shard by shard, then publishes the store atomically on ``close``."""

    def __init__(self, url: str, channels: list[str], dtype: np.dtype, tile_size: int, overwrite: bool = False,
                 staging: str | None = None, compression: str = "lz4", chunk_checksums: bool = True):
        """``staging``: build inside this already-prepared location (a resumable ingest's).
        ``chunk_checksums=False`` writes the format-1 layout (to test and price reading old stores)."""
        if compression not in COMPRESSION:
            raise StoreError(f"compression must be one of {sorted(COMPRESSION)}, got {compression!r}")
        self.compression = compression
        self.chunk_checksums = chunk_checksums
        self.url = str(url)
        self.channels = list(channels)
        self.dtype = np.dtype(dtype)
        self.scale = dtype_scale(self.dtype)
        self.tile_size = tile_size
        self.chunk_tiles, self.shard_tiles = chunk_layout(len(channels) * tile_size**2 * self.dtype.itemsize)
        self.staging = staging or self._begin(overwrite)
        self._array = self._create_array()
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._written = 0
        self._rows: list[dict[str, Any]] = []
        self._stats = _ChannelStats(len(channels))

    def _begin(self, overwrite: bool) -> str:
        try:
            return storage.begin_output(self.url, overwrite, what="tile store")
        except FileExistsError as err:
            raise StoreError(str(err)) from None

    def _create_array(self):
        group = open_zarr_group(storage.join(self.staging, TILES), "w")
        return create_tiles_array(group, (len(self.channels), self.tile_size, self.tile_size), self.dtype,
                                  self.chunk_tiles, self.shard_tiles, self.compression, self.chunk_checksums)

    def append(self, tiles: np.ndarray, rows: list[dict[str, Any]]) -> None:
        expected = (len(self.channels), self.tile_size, self.tile_size)
        if tiles.shape[1:] != expected or tiles.dtype != self.dtype:
            raise StoreError(f"tiles of shape {tiles.shape[1:]} {tiles.dtype} do not match the store's {expected} {self.dtype}")
        if len(rows) != len(tiles):
            raise StoreError(f"{len(tiles)} tiles but {len(rows)} manifest rows")
        self._stats.update(tiles.astype(np.float32) / self.scale)
        self._buffer.append(tiles)
        self._buffered += len(tiles)
        self._rows.extend(rows)
        while self._buffered >= self.shard_tiles:
            self._flush(self.shard_tiles)

    def _flush(self, count: int) -> None:
        data = np.concatenate(self._buffer)
        block, rest = data[:count], data[count:]
        start = self._written
        self._array.resize((start + len(block), *self._array.shape[1:]))
        self._array[start : start + len(block)] = block
        self._written += len(block)
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)

    def close(self, extra_attrs: dict[str, Any] | None = None) -> TileStore:
        if self._buffered:
            self._flush(self._buffered)
        if self._written == 0:
            self.abort()
            raise StoreError(f"no tiles were written to {self.url}")
        info = StoreInfo(
            n_tiles=self._written,
            channels=self.channels,
            dtype=str(self.dtype),
            tile_size=self.tile_size,
            scale=self.scale,
            chunk_tiles=self.chunk_tiles,
            shard_tiles=self.shard_tiles,
            format_version=FORMAT_VERSION if self.chunk_checksums else 1,
            **self._stats.summary(),
        )
        group = open_zarr_group(storage.join(self.staging, TILES), "r+")
        group.attrs.update({"sslray": asdict(info), **(extra_attrs or {})})
        storage.write_bytes(storage.join(self.staging, MANIFEST), _manifest_bytes(self._rows))
        write_checksums(self.staging)
        storage.publish_output(self.staging, self.url, {"kind": "tile_store", "n_tiles": info.n_tiles,
                                                        "format_version": info.format_version})
        return TileStore.open(self.url)

    def abort(self) -> None:
        """Remove everything this writer wrote; a published store is never touched."""
        storage.remove(self.staging)


def create_tiles_array(group, tile_shape: tuple[int, int, int], dtype: np.dtype, chunk_tiles: int, shard_tiles: int,
                       compression: str = "lz4", checksum: bool = True):
    """The ``tiles`` array: blosc-compressed chunks, each followed by a crc32c of its compressed
    bytes (``checksum``), so zarr checks every chunk it decodes; the shard index has its own.

    Without the chunk checksum a flipped byte inside a chunk often decodes to wrong pixels with no
    error; only ``sslray store verify`` (a SHA-256 of every file) would notice. ``checksum=False``
    writes the format-1 layout (tests and the benchmark price the check against it).
    """
    from zarr.codecs import BloscCodec, Crc32cCodec

    blosc = BloscCodec(cname=compression, clevel=COMPRESSION[compression],
                       shuffle="bitshuffle" if np.dtype(dtype).itemsize > 1 else "shuffle")
    return group.create_array(
        "tiles",
        shape=(0, *tile_shape),
        chunks=(chunk_tiles, *tile_shape),
        shards=(shard_tiles, *tile_shape),
        dtype=dtype,
        compressors=[blosc, Crc32cCodec()] if checksum else blosc,  # crc32c after blosc: checks the stored bytes
        fill_value=0,
    )


def _manifest_bytes(rows: list[dict[str, Any]]) -> bytes:
    columns = list(dict.fromkeys(k for row in rows for k in row))  # union, in first-seen order
    table = pa.table({c: [row.get(c) for row in rows] for c in columns})
    table = table.append_column("tile_id", pa.array(np.arange(len(rows), dtype=np.int64)))
    table = table.select(["tile_id", *[c for c in table.column_names if c != "tile_id"]])
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


class _ChannelStats:
    """Streaming per-channel mean/std plus a pixel sample for percentiles."""

    def __init__(self, channels: int, sample_per_tile: int = 256, seed: int = 0) -> None:
        self.sum = np.zeros(channels)
        self.sumsq = np.zeros(channels)
        self.count = 0
        self.samples: list[np.ndarray] = []
        self.sample_per_tile = sample_per_tile
        self.rng = np.random.default_rng(seed)

    def update(self, tiles: np.ndarray) -> None:
        n, c = tiles.shape[:2]
        flat = tiles.reshape(n, c, -1)
        self.sum += flat.sum(axis=(0, 2), dtype=np.float64)
        self.sumsq += np.square(flat, dtype=np.float64).sum(axis=(0, 2))
        self.count += n * flat.shape[2]
        pick = self.rng.integers(0, flat.shape[2], size=min(self.sample_per_tile, flat.shape[2]))
        self.samples.append(flat[:, :, pick].transpose(1, 0, 2).reshape(c, -1))

    def summary(self) -> dict[str, list[float]]:
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean**2, 0.0))
        sample = np.concatenate(self.samples, axis=1)
        return {
            "mean": [round(float(v), 6) for v in mean],
            "std": [round(float(max(v, 1e-6)), 6) for v in std],
            "p01": [round(float(v), 6) for v in np.percentile(sample, 1, axis=1)],
            "p99": [round(float(v), 6) for v in np.percentile(sample, 99, axis=1)],
        }
