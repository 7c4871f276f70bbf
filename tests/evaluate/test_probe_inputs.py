"""Probe inputs: the grouping column, the class counts and the nested splits, checked before Ray starts."""

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslray import storage
from sslray.evaluate.linear_probe import Split
from sslray.evaluate.probe_inputs import (
    check_classes,
    class_counts,
    load_probe_data,
    probe_splits,
    resolve_group_column,
    split_facts,
)


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


def _write(path, columns: dict, dim: int = 3, marked: bool = True) -> str:
    n = len(columns["label"])
    flat = pa.array(np.random.default_rng(0).normal(size=n * dim).astype(np.float32))
    table = pa.table(columns).append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, dim))
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-0.parquet")
    if marked:
        storage.mark_complete(str(path), {"n_rows": n})
    return str(path)


def _settings(url: str, **kw):
    return SimpleNamespace(embeddings=url, label_column="label", group_column=kw.get("group_column"))


def test_load_keeps_labelled_tiles_with_their_image_and_patient_ids(tmp_path):
    labels = ["a", "b", None, "a", "b", "a", "b", "a", "b"]
    url = _write(tmp_path / "emb", {"label": labels, "group": [f"g{i}" for i in range(9)],
                                    "image_id": [f"i{i // 2}" for i in range(9)],
                                    "patient_id": [f"p{i % 3}" for i in range(9)]})
    data = load_probe_data(_settings(url))
    assert len(data.labels) == 8 and data.classes == ["a", "b"] and list(data.targets()[:2]) == [0, 1]
    assert data.patients[1] == "p1" and data.images[2] == "i1"  # the unlabelled third tile is gone
    pred = data.predictions(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert list(pred.targets) == [0, 1] and list(pred.patients) == ["p0", "p1"]
    assert list(data.bootstrap_units(np.array([0, 1]))) == ["p0", "p1"]  # patients, not the groups


def test_a_parquet_folder_another_tool_wrote_is_probed_like_a_published_table(tmp_path):
    url = _write(tmp_path / "theirs", {"label": ["a", "b"] * 4}, marked=False)
    assert list(load_probe_data(_settings(url)).labels) == ["a", "b"] * 4
    (tmp_path / "theirs" / storage.WRITING_MARKER).write_text('{"kind": "embeddings"}')  # still being written
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_probe_data(_settings(url))


def test_without_patient_ids_there_are_no_patients_and_the_groups_are_resampled(tmp_path):
    url = _write(tmp_path / "emb", {"label": ["a", "b"] * 4, "group": [f"g{i}" for i in range(8)],
                                    "patient_id": [None] + ["p"] * 7})
    data = load_probe_data(_settings(url))
    assert data.patients is None and data.images is None
    assert list(data.bootstrap_units(np.array([2, 3]))) == ["g2", "g3"]
    outer = Split(np.arange(6), np.arange(6, 8))
    facts = split_facts(data, outer, SimpleNamespace(test_fraction=0.25, val_fraction=0.2, seed=0))
    assert facts["bootstrap_unit"] == "group" and (facts["n_train"], facts["n_test"]) == (6, 2)


def test_the_pictures_callback_draws_every_tile_and_the_test_predictions(tmp_path, monkeypatch):
    url = _write(tmp_path / "emb", {"label": ["a", "b"] * 4, "group": [f"g{i}" for i in range(8)]})
    data = load_probe_data(_settings(url))
    calls = []
    monkeypatch.setattr("sslray.evaluate.pictures.draw_tile_pictures", lambda *args, **kw: calls.append((args, kw)))
    rows = np.array([1, 2])
    data.pictures(data.predictions(rows, np.eye(2)), "knn_")(str(tmp_path))
    (args, kw), = calls
    assert args[0].shape == (8, 3) and list(args[1]) == ["a", "b"] * 4 and args[2][7] == "g7"
    assert list(args[3]) == [1, 0] and args[5] == ["a", "b"] and args[6] == str(tmp_path) and kw == {"prefix": "knn_"}
