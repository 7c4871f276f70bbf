"""``sslray store info``: what a published tile store holds, for people.

The checksums themselves (``checksums.json``, ``verify_store``, ``checked_read``) are part of the
store format and live in ``sslray.artifacts.checksums``; they are re-exported here so code that
imported them from ``sslray.data.integrity`` keeps working.
"""

from __future__ import annotations

from typing import Any

from sslray import storage
from sslray.artifacts.checksums import (  # noqa: F401  (re-exported)
    CHECKSUMS,
    DECODE_ERRORS,
    checked_read,
    compute_checksums,
    verify_store,
    write_checksums,
)
from sslray.artifacts.tile_store import TileStore


def store_summary(url: str) -> dict[str, Any]:
    """What ``sslray store info`` prints: size, channels, groups and per-channel statistics."""
    store = TileStore.open(url)
    info = store.info
    manifest = store.manifest
    fs, root = storage.filesystem(url)
    groups = {
        column: int(manifest[column].nunique())
        for column in ("image_id", "group", "slide_id", "patient_id", "field_id", "plate", "well", "split")
        if column in manifest and manifest[column].notna().any()
    }
    labels = manifest["label"].value_counts().to_dict() if "label" in manifest else {}
    magnifications = (manifest["magnification"].value_counts().sort_index().items()
                      if "magnification" in manifest else [])
    return {
        "url": url,
        "tiles": info.n_tiles,
        "tile_size": info.tile_size,
        "dtype": info.dtype,
        "channels": {
            name: {"mean": info.mean[i], "std": info.std[i], "p01": info.p01[i], "p99": info.p99[i]}
            for i, name in enumerate(info.channels)
        },
        "groups": groups,
        "labels": {str(k): int(v) for k, v in labels.items()},
        "tiles_per_magnification": {f"{k:g}X": int(v) for k, v in magnifications},
        "bytes_on_storage": int(fs.du(root)),
        "chunk_tiles": info.chunk_tiles,
        "shard_tiles": info.shard_tiles,
        "format_version": info.format_version,
        "chunk_checksums": info.format_version >= 2,  # format 1: damage is found by `store verify` only
    }
