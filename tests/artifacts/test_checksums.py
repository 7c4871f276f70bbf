"""Store checksums: a SHA-256 per file that `verify_store` recomputes, and reads that name a damaged shard."""

import shutil

import numpy as np
import pytest

from sslray import storage
from sslray.artifacts.checksums import CHECKSUMS, checked_read, compute_checksums, verify_store
from sslray.artifacts.store_format import StoreError


def _copy_store(tiny_store, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(tiny_store.url, dest)
    return dest


def test_fresh_store_verifies(tiny_store):
    assert verify_store(tiny_store.url) == []


def test_damaged_shard_is_named(tiny_store, tmp_path):
    store = _copy_store(tiny_store, tmp_path)
    shard = next(p for p in (store / "tiles.zarr" / "tiles").rglob("*") if p.is_file() and p.name != "zarr.json")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_store(str(store))
    assert len(problems) == 1 and shard.name in problems[0] and "checksum mismatch" in problems[0]


def test_missing_and_extra_files_are_named(tiny_store, tmp_path):
    store = _copy_store(tiny_store, tmp_path)
    (store / "manifest.parquet").unlink()
    (store / "stray.bin").write_bytes(b"x")
    problems = verify_store(str(store))
    assert f"{store}/manifest.parquet: missing" in problems and f"{store}/stray.bin: unexpected file" in problems


def test_markers_and_the_checksums_file_are_not_checksummed(tiny_store):
    sums = compute_checksums(tiny_store.url)
    assert "manifest.parquet" in sums and any(p.startswith("tiles.zarr/") for p in sums)
    assert not {storage.SUCCESS_MARKER, storage.WRITING_MARKER, CHECKSUMS} & set(sums)


def test_a_store_without_checksums_is_reported_not_trusted(tiny_store, tmp_path):
    store = _copy_store(tiny_store, tmp_path)
    (store / CHECKSUMS).unlink()
    assert verify_store(str(store)) == [f"{store}: no {CHECKSUMS}; the store predates checksums or was not "
                                        "written by sslray"]


def test_verifying_something_that_is_not_a_store_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="no tile store at"):
        verify_store(str(tmp_path / "nothing"))


def test_an_error_that_is_not_damage_passes_through_unchanged(tiny_store):
    tiles = tiny_store.tiles()
    # every shard decodes, so this is not damage
    with pytest.raises(ValueError, match="^a bug$"), checked_read(tiny_store.url, tiles, range(0, 8)):
        raise ValueError("a bug")
    # a lost file is not damage either
    with pytest.raises(FileNotFoundError), checked_read(tiny_store.url, tiles, np.array([3, 5])):
        raise FileNotFoundError("gone")
