"""Shard checksums: `sslray store verify` names damaged, missing and extra files."""

import json

from sslray.cli import main
from sslray.data.integrity import store_summary, verify_store


def _copy_store(tiny_store, tmp_path):
    import shutil

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


def test_missing_and_extra_files_are_named(tiny_store, tmp_path, capsys):
    store = _copy_store(tiny_store, tmp_path)
    (store / "manifest.parquet").unlink()
    (store / "stray.bin").write_bytes(b"x")
    assert main(["store", "verify", str(store)]) == 1
    err = capsys.readouterr().err
    assert "manifest.parquet: missing" in err and "stray.bin: unexpected file" in err


def test_info_summarises_the_store(tiny_store, capsys):
    summary = store_summary(tiny_store.url)
    assert summary["tiles"] == 96 and summary["groups"]["group"] == 24
    assert set(summary["labels"]) == {"round", "spindle", "punctate", "fragmented"}
    assert summary["bytes_on_storage"] > 0 and len(summary["channels"]) == 2
    assert main(["store", "info", tiny_store.url]) == 0
    assert json.loads(capsys.readouterr().out)["tiles"] == 96
