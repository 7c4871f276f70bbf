"""The bag container and its per-bag checks."""

import numpy as np
import pytest

from sslray.evaluate.bags import Bags, check_split, per_bag_constant, resolve_bag_column
from tests.evaluate.bag_fixtures import tile_table


def test_tiles_and_targets_of_a_bag():
    bags = Bags(np.array(["a", "b"]), np.arange(10, dtype=np.float32).reshape(5, 2), np.array([0, 2, 5]), "slide_id",
                labels=np.array(["y", "x"]))
    assert bags.dim == 2 and list(bags.sizes) == [2, 3] and bags.tiles(1).shape == (3, 2)
    assert list(bags.targets()) == [1, 0]
    survival = Bags(bags.ids, bags.features, bags.offsets, "slide_id", time=np.array([1.0, 2.0]),
                    event=np.array([True, False]))
    np.testing.assert_array_equal(survival.targets(), [[1.0, 1.0], [2.0, 0.0]])


def test_the_bag_column_is_chosen_or_checked():
    table, _ = tile_table(n_bags=2)
    assert resolve_bag_column(table.column_names, table, None, "t") == "slide_id"
    assert resolve_bag_column(table.column_names, table, "patient_id", "t") == "patient_id"
    with pytest.raises(ValueError, match="bag_column 'case' is not a column"):
        resolve_bag_column(table.column_names, table, "case", "t")
    bare = table.drop_columns(["slide_id", "patient_id"])
    with pytest.raises(ValueError, match="no column groups the tiles into bags"):
        resolve_bag_column(bare.column_names, bare, None, "t")


def test_a_constant_per_bag_ignores_missing_values_and_names_a_conflict():
    values = np.array(["a", None, "a", "b", "c"], dtype=object)
    order, offsets, ids = np.arange(5), np.array([0, 3, 5]), np.array(["one", "two"])
    with pytest.raises(ValueError, match="bag 'two' has conflicting values in column 'label': 'b', 'c'"):
        per_bag_constant(values, order, offsets, ids, "label", "t")
    assert list(per_bag_constant(values[:3], order[:3], offsets[:2], ids[:1], "label", "t")) == ["a"]


def test_a_split_needs_train_and_test():
    with pytest.raises(ValueError, match="names no 'test' bag"):
        check_split(np.array(["train", "val"], dtype=object), np.array(["a", "b"]), "t")
