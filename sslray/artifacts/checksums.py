"""Store checksums: a SHA-256 per file (``checksums.json``) and a crc32c per chunk, checked on read.

Every file of a published store (Zarr metadata, shard objects, the manifest) gets a SHA-256
in ``checksums.json``, written just before the ``_SUCCESS`` marker. Verification recomputes
them, so a damaged or truncated shard on object storage is named before it silently feeds
garbage into a week of training.

Reads check too, at almost no cost: every chunk of a format-2 store carries a crc32c that zarr
verifies when it decodes the chunk, and ``checked_read`` turns the failure into a StoreError
naming the shard file, so training and embedding stop instead of consuming damaged pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from sslray import storage
from sslray.artifacts.kinds import require_artifact
from sslray.artifacts.store_format import TILES, StoreError

CHECKSUMS = "checksums.json"
_UNCHECKED = {storage.SUCCESS_MARKER, storage.WRITING_MARKER, CHECKSUMS}
# What zarr raises on bad bytes: ValueError (crc32c mismatch, malformed shard index), RuntimeError
# (blosc cannot decompress), TypeError/IndexError (a truncated shard's index). Not OSError: a
# missing file or a lost connection is not damage.
DECODE_ERRORS = (ValueError, RuntimeError, TypeError, IndexError)


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
    """Problems found, one line each naming the file; empty when the store is intact.

    Not a (finished) tile store at all is a StoreError saying what is there instead.
    """
    _require_store(url)
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


def _require_store(url: str) -> None:
    require_artifact(url, ("tile_store",), missing=StoreError, wrong=StoreError)


@contextmanager
def checked_read(url: str, tiles, rows: range | np.ndarray) -> Iterator[None]:
    """Run a read of store ``rows`` from the zarr array ``tiles``; a chunk that fails to decode
    becomes a StoreError naming the damaged shard file and what to do about it.

    The shard is found by reading each shard the failed read touched (only on failure). When
    none of them fails on its own the original error is raised unchanged: it was not damage.
    """
    try:
        yield
    except OSError:
        raise
    except DECODE_ERRORS as err:
        if isinstance(err, StoreError):
            raise
        key = _damaged_shard(tiles, rows)
        if key is None:
            raise
        reason = "crc32c checksum mismatch" if "checksum" in str(err) else f"{type(err).__name__}: {err}"[:160]
        shard = storage.join(url, TILES, tiles.path, key)
        raise StoreError(
            f"tile store {url}: shard {shard} is damaged ({reason}); its tiles cannot be trusted, so the read "
            f"stops here. Run `sslray store verify {url}` to list every damaged file, then ingest the store "
            f"again (`sslray ingest SRC {url} --overwrite`) or restore it from a copy"
        ) from err


def _damaged_shard(tiles, rows: range | np.ndarray) -> str | None:
    """The key (``c/3/0/0/0``) of the first shard among those ``rows`` touch that fails to decode."""
    per = (tiles.shards or tiles.chunks)[0]
    if isinstance(rows, range):
        shards = range(rows.start // per, (max(rows.stop, rows.start + 1) - 1) // per + 1)
    else:
        shards = np.unique(np.asarray(rows, dtype=np.int64) // per).tolist()
    for index in shards:
        try:
            np.asarray(tiles[index * per : (index + 1) * per])
        except OSError:
            raise
        except DECODE_ERRORS:
            return tiles.metadata.encode_chunk_key((int(index), *[0] * (tiles.ndim - 1)))
    return None
