"""The synthetic set: deterministic per seed, labelled by field, classes told apart by shape not brightness."""

import csv

import numpy as np
import pytest

from sslray.data.readers import read_image
from sslray.data.synthetic import CLASSES, SyntheticSpec, render_field, write_dataset


def _rows(labels_csv):
    with open(labels_csv, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_same_seed_writes_the_same_files_and_another_seed_does_not(tmp_path):
    spec = SyntheticSpec(images_per_class=1, size=32)
    a, b = write_dataset(tmp_path / "a", spec), write_dataset(tmp_path / "b", spec)
    assert a.read_text() == b.read_text()
    for row in _rows(a):
        assert (a.parent / row["path"]).read_bytes() == (b.parent / row["path"]).read_bytes()
    other = write_dataset(tmp_path / "c", SyntheticSpec(images_per_class=1, size=32, seed=1))
    assert (other.parent / "round/round_000.tif").read_bytes() != (a.parent / "round/round_000.tif").read_bytes()


def test_every_class_is_written_as_two_channel_fields_grouped_by_field(tmp_path):
    labels = write_dataset(tmp_path, SyntheticSpec(images_per_class=2, size=32))
    rows = _rows(labels)
    assert [r["label"] for r in rows] == [c for c in CLASSES for _ in range(2)]
    assert rows[0] == {"path": "round/round_000.tif", "label": "round", "group": "round_000"}
    image = read_image(tmp_path / rows[0]["path"])
    assert image.shape == (2, 32, 32) and image.dtype == np.uint8


def test_magnifications_write_each_field_twice_with_a_shared_field_id(tmp_path):
    labels = write_dataset(tmp_path, SyntheticSpec(images_per_class=1, size=32, magnifications=(10, 20)))
    rows = [r for r in _rows(labels) if r["label"] == "round"]
    assert [(r["path"], r["magnification"], r["field_id"]) for r in rows] == [
        ("round/10X/round_000_10x.tif", "10", "round_000"), ("round/20X/round_000_20x.tif", "20", "round_000")]
    assert read_image(tmp_path / rows[0]["path"]).shape == (2, 16, 16)


def test_classes_share_brightness_so_only_shape_tells_them_apart():
    means = {c: np.mean([render_field(c, np.random.default_rng([0, i]), 64).mean() for i in range(6)]) for c in CLASSES}
    assert max(means.values()) < 1.25 * min(means.values())  # no class is simply brighter
    with pytest.raises(ValueError, match="unknown synthetic class 'oval'"):
        render_field("oval", np.random.default_rng(0))
