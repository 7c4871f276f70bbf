"""Issue 11, failure 6: a damaged store fails the read naming the shard; readers say what a
path holds when it is not the artifact they read (nothing, an image folder, another kind)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sslray.cli import main
from sslray.data.selection import Selection
from sslray.data.store import StoreError, TileStore, TileStoreWriter

SHARD = "tiles.zarr/tiles/c/0/0/0/0"  # the tiny store's only shard (96 tiles < one shard)


def _copy(store: TileStore, dest: Path) -> Path:
    shutil.copytree(store.url, dest)
    return dest


def _flip(path: Path, position: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if position is None else position] ^= 0x01  # one bit, mid-chunk by default
    path.write_bytes(bytes(data))


def _rewrite(store: TileStore, dest: Path, chunk_checksums: bool) -> TileStore:
    """The same tiles and manifest written again, here with or without the chunk crc32c."""
    info = store.info
    writer = TileStoreWriter(str(dest), info.channels, np.dtype(info.dtype), info.tile_size,
                             chunk_checksums=chunk_checksums)
    rows = [{k: v for k, v in row.items() if k != "tile_id"} for row in store.manifest_table.to_pylist()]
    writer.append(store.read(0, len(store)), rows)
    return writer.close()


def test_new_stores_checksum_every_chunk(tiny_store):
    codecs = json.loads((Path(tiny_store.url) / "tiles.zarr" / "tiles" / "zarr.json").read_text())
    inner = [c["name"] for c in codecs["codecs"][0]["configuration"]["codecs"]]
    assert inner == ["bytes", "blosc", "crc32c"]  # the crc covers the compressed bytes as stored
    assert tiny_store.info.format_version == 2
    assert json.loads((Path(tiny_store.url) / "_SUCCESS").read_text())["kind"] == "tile_store"


def test_one_flipped_byte_fails_the_read_naming_the_shard(tiny_store, tmp_path):
    store = _copy(tiny_store, tmp_path / "damaged")
    _flip(store / SHARD)
    damaged = TileStore.open(str(store))
    with pytest.raises(StoreError) as err:
        damaged.read(0, len(damaged))
    message = str(err.value)
    assert f"{store}/{SHARD} is damaged (crc32c checksum mismatch)" in message
    assert f"sslray store verify {store}" in message and "--overwrite" in message
    view = damaged.select(Selection(where={"label": "round"}))  # a view of some rows too
    with pytest.raises(StoreError, match="c/0/0/0/0 is damaged"):
        view.read(0, len(view))


def test_damage_in_the_shard_index_is_named_too(tiny_store, tmp_path):
    store = _copy(tiny_store, tmp_path / "index")
    _flip(store / SHARD, position=-20)  # the index (offsets of each chunk) sits at the shard's end
    with pytest.raises(StoreError, match="c/0/0/0/0 is damaged"):
        TileStore.open(str(store)).read(0, 8)


def test_damage_surfaces_through_the_ray_data_read_path(tiny_store, tmp_path, ray_session):
    store = _copy(tiny_store, tmp_path / "ray")
    _flip(store / SHARD)
    from sslray.data.datasource import read_tile_store

    ds = read_tile_store(TileStore.open(str(store)), columns=["label"])
    with pytest.raises(StoreError) as err:  # raised inside the read task; Ray keeps the type
        ds.take_all()
    assert f"{store}/{SHARD} is damaged" in str(err.value)


def test_format_1_store_without_chunk_checksums_still_reads(tiny_store, tmp_path):
    old = _rewrite(tiny_store, tmp_path / "v1", chunk_checksums=False)
    codecs = (Path(old.url) / "tiles.zarr" / "tiles" / "zarr.json").read_text()
    assert '"crc32c"' in codecs and codecs.count('"crc32c"') == 1  # the shard index's only
    reopened = TileStore.open(old.url)
    assert reopened.info.format_version == 1
    np.testing.assert_array_equal(reopened.read(0, len(reopened)), tiny_store.read(0, len(tiny_store)))
    _flip(Path(old.url) / SHARD, position=5)  # blosc's header: a decode failure, not a crc one
    with pytest.raises(StoreError, match=r"c/0/0/0/0 is damaged \(RuntimeError"):
        TileStore.open(old.url).read(0, 8)


@pytest.mark.parametrize("action", ["info", "verify"])
def test_store_commands_say_what_is_there_instead(action, tiny_store, synthetic_images, tmp_path, capsys):
    images, _ = synthetic_images
    table = tmp_path / "emb"
    _embeddings_table(table)
    cases = {
        str(tmp_path / "nope"): f"no tile store at {tmp_path / 'nope'} (nothing there",
        str(images): f"{images} is not an sslray tile store (no tiles.zarr / manifest.parquet; did you mean to "
                     "`sslray ingest` it?)",
        str(table): f"{table} is an embeddings table, not a tile store",
        str(images / "labels.csv"): "is a file, not a tile store",
    }
    for url, expected in cases.items():
        assert main(["store", action, url]) == 2, url
        err = capsys.readouterr().err
        assert expected in err and "interrupted" not in err, err


def test_interrupted_ingest_is_still_called_interrupted(tmp_path):
    (tmp_path / ".s.partial" / "_ingest").mkdir(parents=True)  # what a killed ingest leaves beside DEST
    with pytest.raises(StoreError, match=r"tile store .*/s is incomplete .*interrupted.*run the ingest again"):
        TileStore.open(str(tmp_path / "s"))


def test_embeddings_table_passed_as_store_is_named(tmp_path):
    _embeddings_table(tmp_path / "emb")
    with pytest.raises(StoreError, match="is an embeddings table, not a tile store"):
        TileStore.open(str(tmp_path / "emb"))


def test_evaluate_on_a_tile_store_says_so(tiny_store, tmp_path, capsys):
    code = main(["evaluate", "--embeddings", tiny_store.url, f"out={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and f"{tiny_store.url} is a tile store, not an embeddings table" in err, err
    assert "checksums.json" not in err and "sslray embed" in err


def test_aggregate_on_a_tile_store_says_so(tiny_store):
    from sslray.aggregate.inputs import read_embeddings

    with pytest.raises(ValueError, match="is a tile store, not an embeddings table"):
        read_embeddings(tiny_store.url, "image_id", [])


def _embeddings_table(dest: Path) -> None:
    """An embeddings table as ``sslray embed`` publishes one (parquet parts + ``_SUCCESS``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest.mkdir(parents=True)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(8, np.float32)), 4)
    pq.write_table(pa.table({"tile_id": [0, 1], "label": ["a", "b"], "embedding": emb}), dest / "part-0.parquet")
    (dest / "_SUCCESS").write_text(json.dumps({"n_rows": 2}))  # as written before kinds were recorded
