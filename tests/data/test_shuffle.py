"""The shuffle buffer: every tile exactly once per epoch, batches mixing many shards."""

import numpy as np
import pytest

from sslray.data.shuffle import ShuffleBuffer, shuffled_batches


def _blocks(n_blocks=20, per_block=50):
    for b in range(n_blocks):
        ids = np.arange(b * per_block, (b + 1) * per_block)
        yield {"tile_id": ids, "image": np.repeat(ids[:, None, None, None], 4, axis=-1).astype(np.int32)}


def test_every_tile_comes_out_exactly_once_with_its_own_pixels():
    batches = list(shuffled_batches(_blocks(), batch_size=32, buffer=200, seed=0, drop_last=False))
    ids = np.concatenate([b["tile_id"] for b in batches])
    assert sorted(ids.tolist()) == list(range(1000))
    for batch in batches:
        np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], batch["tile_id"])
    assert all(len(b["tile_id"]) == 32 for b in batches[:-1])


def test_batches_mix_many_shards_where_slicing_blocks_would_give_one():
    batches = list(shuffled_batches(_blocks(), batch_size=32, buffer=400, seed=1))
    shards_per_batch = [len(np.unique(b["tile_id"] // 50)) for b in batches]
    assert np.median(shards_per_batch) >= 6  # a block-sliced batch would span 1-2 shards
    assert len(batches) == 1000 // 32  # drop_last


def test_same_seed_same_order_and_column_mismatch_is_refused():
    first = [b["tile_id"].tolist() for b in shuffled_batches(_blocks(), 16, 100, seed=3)]
    again = [b["tile_id"].tolist() for b in shuffled_batches(_blocks(), 16, 100, seed=3)]
    assert first == again
    buffer = ShuffleBuffer(10)
    buffer.add({"a": np.zeros(3)})
    with pytest.raises(ValueError, match="columns"):
        buffer.add({"b": np.zeros(3)})


def test_blocks_larger_than_the_buffer_grow_it():
    buffer = ShuffleBuffer(4, seed=0)
    buffer.add({"x": np.arange(10)})
    buffer.add({"x": np.arange(10, 30)})
    taken = np.concatenate([buffer.take(7)["x"] for _ in range(5)])
    assert sorted(taken.tolist()) == list(range(30)) and len(buffer) == 0


def test_a_buffer_is_reused_across_epochs_but_never_mixes_them():
    buffer = ShuffleBuffer(200)
    for epoch in range(2):
        ids = np.concatenate([b["tile_id"] for b in shuffled_batches(_blocks(), 32, buffer, seed=epoch,
                                                                     drop_last=False)])
        assert sorted(ids.tolist()) == list(range(1000))
    buffer.add({"tile_id": np.arange(3), "image": np.zeros((3, 1, 1, 4), np.int32)})
    with pytest.raises(ValueError, match="earlier pass"):
        next(shuffled_batches(_blocks(), 32, buffer))
