"""Probe inputs: the grouping column, the class counts and the nested splits, checked before Ray starts."""

import numpy as np
import pyarrow as pa
import pytest

from sslray.evaluate.probe_inputs import check_classes, class_counts, probe_splits, resolve_group_column


def test_class_counts_count_tiles_and_distinct_groups():
    labels = np.array(["a", "a", "a", "b"])
    assert class_counts(labels, np.array(["p1", "p1", "p2", "p3"])) == {"a": (3, 2), "b": (1, 1)}
    assert class_counts(labels, None) == {"a": (3, 3), "b": (1, 1)}


def test_the_default_group_column_is_group_when_filled_else_image_id():
    keep = np.array([True, True, False])
    filled = pa.table({"group": ["p1", "p2", None], "image_id": ["i1", "i2", "i3"]})
    assert resolve_group_column(filled, None, keep, "t") == "group"  # the unlabelled row may lack one
    holes = pa.table({"group": ["p1", None, None], "image_id": ["i1", "i2", "i3"]})
    assert resolve_group_column(holes, None, keep, "t") == "image_id"
    with pytest.raises(ValueError, match="t: group_column 'group' is empty for 1 of 2 labelled tiles"):
        resolve_group_column(holes, "group", keep, "t")


def test_a_class_with_too_few_groups_is_refused_with_the_counts():
    labels = np.array(["a"] * 6 + ["b"] * 6)
    groups = np.array(["p1", "p2", "p3"] * 2 + ["q1", "q2"] * 3)
    with pytest.raises(ValueError, match=r"t: class\(es\) 'b' of column 'label' have fewer than 3 'patient' groups.*"
                                         r"b: 6 tiles in 2 groups"):
        check_classes(labels, groups, "t", "label", "patient")
    check_classes(labels, None, "t", "label", None)  # ungrouped, every tile is a unit: enough


def test_nested_splits_keep_groups_apart_and_validation_inside_training():
    labels = np.array(["a", "b"] * 20)
    groups = np.array([f"g{i // 2}" for i in range(40)])  # 20 groups, each holding one a and one b
    outer, inner = probe_splits(labels, groups, 0.25, 0.2, 0, "t")
    assert not set(groups[outer.train]) & set(groups[outer.test])
    assert set(inner.train) | set(inner.test) == set(outer.train) and not set(inner.train) & set(inner.test)
    assert not set(groups[inner.train]) & set(groups[inner.test])
