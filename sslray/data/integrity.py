"""Shard checksums, ``sslray store verify`` and ``sslray store info``.

Every file of a published store (Zarr metadata, shard objects, the manifest) gets a SHA-256
in ``checksums.json``, written just before the ``_SUCCESS`` marker. Verification recomputes
them, so a damaged or truncated shard on object storage is named before it silently feeds
garbage into a week of training.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sslray import storage

CHECKSUMS = "checksums.json"
_UNCHECKED = {storage.SUCCESS_MARKER, CHECKSUMS}


def compute_checksums(url: str) -> dict[str, str]:
    """SHA-256 of every file under ``url``, keyed by path relative to it."""
    fs, root = storage.filesystem(url)
    sums = {}
    for path in sorted(fs.find(root)):
        rel = path[len(root.rstrip("/")) + 1 :]
        if rel in _UNCHECKED:
            continue
        digest = hashlib.sha256()
        with fs.open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        sums[rel] = digest.hexdigest()
    return sums


def write_checksums(url: str) -> None:
    storage.write_json(storage.join(url, CHECKSUMS), compute_checksums(url))


def verify_store(url: str) -> list[str]:
    """Problems found, one line each naming the file; empty when the store is intact."""
    if not storage.is_complete(url):
        return [f"{url}: incomplete store (no {storage.SUCCESS_MARKER})"]
    checksums_url = storage.join(url, CHECKSUMS)
    if not storage.exists(checksums_url):
        return [f"{url}: no {CHECKSUMS}; the store predates checksums or was not written by sslray"]
    expected = storage.read_json(checksums_url)
    actual = compute_checksums(url)
    problems = [f"{storage.join(url, p)}: missing" for p in sorted(set(expected) - set(actual))]
    problems += [
        f"{storage.join(url, p)}: checksum mismatch (damaged or modified)"
        for p in sorted(set(expected) & set(actual))
        if expected[p] != actual[p]
    ]
    problems += [f"{storage.join(url, p)}: unexpected file" for p in sorted(set(actual) - set(expected))]
    return problems


def store_summary(url: str) -> dict[str, Any]:
    """What ``sslray store info`` prints: size, channels, groups and per-channel statistics."""
    from sslray.data.store import TileStore

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
    }
