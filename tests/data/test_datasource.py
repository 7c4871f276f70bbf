"""The Ray Data reader of a tile store: one read task per shard, each a block of its tiles and the
manifest columns asked for, shuffled within the shard, magnification pairs, channel selection.

The read tasks are planned and run in this process (a ReadTask is a plain callable); one test
reads through Ray Data on the shared local Ray.
"""

import numpy as np
import pytest
from ray.data.block import BlockAccessor

from sslray.artifacts import tile_store_writer
from sslray.artifacts.selection import Selection
from sslray.artifacts.tile_store_writer import TileStoreWriter
from sslray.data.datasource import TileStoreDatasource, _read_rows, read_tile_store
from sslray.data.pairs import PairPolicy

N, SHARD = 20, 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """20 tiles of 2 channels in shards of 8; every pixel of tile i is i (channel 1: i + 100).
    Fields f0..f4 at 100x (tiles 0-9) and again at 200x (tiles 10-19)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(tile_store_writer, "chunk_layout", lambda tile_bytes: (4, SHARD))
    tiles = np.stack([np.stack([np.full((8, 8), i), np.full((8, 8), i + 100)]) for i in range(N)]).astype(np.uint8)
    writer = TileStoreWriter(str(tmp_path_factory.mktemp("ds") / "s"), ["DNA", "ER"], np.uint8, 8)
    writer.append(tiles, [{"image_id": f"i{i}", "field_id": f"f{i % 5}", "magnification": 100.0 if i < 10 else 200.0,
                           "label": "a" if i % 2 else "b"} for i in range(N)])
    yield writer.close()
    patch.undo()


def _blocks(source: TileStoreDatasource) -> list[dict[str, np.ndarray]]:
    """Plan the read tasks and run each here, as a Ray worker would; one numpy batch per task."""
    batches = []
    for task in source.get_read_tasks(parallelism=1):
        (block,) = list(task())
        batches.append(BlockAccessor.for_block(block).to_batch_format("numpy"))
    return batches


def test_one_read_task_per_shard_in_store_order(store):
    source = TileStoreDatasource(store, ["tile_id", "label"], shuffle=False)
    tasks = source.get_read_tasks(parallelism=99)
    assert [t.metadata.num_rows for t in tasks] == [8, 8, 4]
    assert tasks[0].metadata.size_bytes == 8 * store.info.tile_bytes
    assert source.estimate_inmemory_data_size() == N * store.info.tile_bytes
    blocks = _blocks(source)
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in blocks]), store.read(0, N))
    assert np.concatenate([b["tile_id"] for b in blocks]).tolist() == list(range(N))
    assert blocks[0]["label"].tolist() == ["b", "a"] * 4


def test_only_the_columns_asked_for_and_none_is_just_the_image(store):
    assert set(_blocks(TileStoreDatasource(store, ["label"], shuffle=False))[0]) == {"image", "label"}
    assert set(_blocks(TileStoreDatasource(store, [], shuffle=False))[0]) == {"image"}
    with pytest.raises(KeyError, match=r"manifest has no column\(s\) \['plate'\]"):
        TileStoreDatasource(store, ["tile_id", "plate"], shuffle=False)


def test_a_view_reads_its_rows_split_at_shard_boundaries_and_its_channels(store):
    view = store.select(Selection(where={"image_id": ["i6", "i7", "i8", "i17"]}, channels=["ER"]))
    blocks = _blocks(TileStoreDatasource(view, ["tile_id"], shuffle=False))
    assert [b["tile_id"].tolist() for b in blocks] == [[6, 7], [8], [17]]
    assert [b["image"][:, 0, 0, 0].tolist() for b in blocks] == [[106, 107], [108], [117]]
    assert blocks[0]["image"].shape == (2, 1, 8, 8)


def test_shuffle_permutes_tiles_within_each_shard_keeping_columns_with_their_tiles(store):
    source = TileStoreDatasource(store, ["tile_id"], shuffle=True)
    within, shard_orders = set(), set()
    for _ in range(12):
        blocks = _blocks(source)
        assert sorted(tuple(sorted(b["tile_id"].tolist())) for b in blocks) == sorted(
            [tuple(range(0, 8)), tuple(range(8, 16)), tuple(range(16, 20))])  # the shards, in some order
        for b in blocks:
            np.testing.assert_array_equal(b["image"][:, 0, 0, 0], b["tile_id"])  # each tile keeps its row
        first = next(b for b in blocks if b["tile_id"].min() == 0)["tile_id"]
        within.add(tuple(first.tolist()))
        shard_orders.add(tuple(int(b["tile_id"].min()) for b in blocks))
    assert len(within) > 1  # the first shard's tiles in a fresh order on every read
    assert len(shard_orders) > 1  # and the shards (12 equal orders of 3: 1 in 10^8)


def test_pairs_read_each_anchor_with_a_partner_of_its_field_at_the_next_magnification(store):
    source = TileStoreDatasource(store, ["tile_id"], shuffle=False, pairs=PairPolicy("ordered"))
    assert source.estimate_inmemory_data_size() == 10 * 2 * store.info.tile_bytes  # anchors: the 100x tiles
    blocks = _blocks(source)
    assert [b["tile_id"].tolist() for b in blocks] == [list(range(8)), [8, 9]]
    images = np.concatenate([b["image"] for b in blocks])
    assert images.shape == (10, 2, 2, 8, 8)
    anchors, partners = images[:, 0, 0, 0, 0].astype(int), images[:, 1, 0, 0, 0].astype(int)
    assert anchors.tolist() == list(range(10))
    assert all(p >= 10 and p % 5 == a % 5 for a, p in zip(anchors, partners, strict=True))


def test_scattered_rows_come_back_in_the_order_asked(store):
    tiles = store.tiles()
    assert _read_rows(tiles, np.array([17, 2, 9, 2]))[:, 0, 0, 0].tolist() == [17, 2, 9, 2]
    assert _read_rows(tiles, np.array([3, 5, 6]))[:, 0, 0, 0].tolist() == [3, 5, 6]


def test_read_tile_store_gives_one_block_per_shard_on_ray(store, ray_session):
    dataset = read_tile_store(store, columns=["tile_id"])
    rows = dataset.take_all()
    assert sorted(int(r["tile_id"]) for r in rows) == list(range(N))
    assert dataset.materialize().num_blocks() == 3
