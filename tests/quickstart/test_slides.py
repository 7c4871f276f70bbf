"""The quickstart's synthetic slides: a minority focus makes a slide positive, no field is used
twice, and the composed table is one MIL can read."""

import json

import numpy as np
import pyarrow as pa
import pytest

from sslray import storage
from sslray.evaluate.bag_table import BagSource, load_bags
from sslray.quickstart.slides import FIELDS_PER_SLIDE, FOCUS, NEGATIVE, POSITIVE, compose_slides, plan_slides
from tests.evaluate.bag_fixtures import write_table


def _fields(n=12):
    return {c: [f"{c}-{i}" for i in range(n)] for c in ("round", "spindle", "fragmented", FOCUS)}


def test_positive_slides_hold_one_focus_field_and_negatives_none():
    slides = plan_slides(_fields())
    labels = [label for label, _ in slides.values()]
    per_pair = 2 * FIELDS_PER_SLIDE - 1
    assert labels.count(POSITIVE) == labels.count(NEGATIVE) == 36 // per_pair  # 36 background fields
    used = [f for _, fields in slides.values() for f in fields]
    assert len(used) == len(set(used))
    for label, fields in slides.values():
        assert len(fields) == FIELDS_PER_SLIDE
        assert sum(f.startswith(FOCUS) for f in fields) == (1 if label == POSITIVE else 0)
    assert plan_slides(_fields()) == slides  # seeded


def test_too_few_fields_is_an_error():
    with pytest.raises(ValueError, match="too few fields to compose slides"):
        plan_slides({"round": ["a"] * 3, FOCUS: ["f"]})


def test_composed_slides_are_a_published_table_mil_reads(tmp_path):
    fields = _fields(12)
    rows = [(f, c) for c, fs in fields.items() for f in fs for _ in range(4)]  # 4 tiles per field
    table = pa.table({"tile_id": [f"t{i}" for i in range(len(rows))], "image_id": [r[0] for r in rows],
                      "label": [r[1] for r in rows]})
    features = np.random.default_rng(0).normal(size=(len(rows), 3)).astype(np.float32)
    src = write_table(tmp_path / "emb", table, features)
    storage.mark_complete(src, {"kind": "embeddings", "checkpoint": "/ckpt"})
    out = compose_slides(src, str(tmp_path / "slides"))
    assert json.loads((tmp_path / "slides" / "_SUCCESS").read_text())["checkpoint"] == "/ckpt"
    bags = load_bags(BagSource(out))
    assert len(bags) == 2 * (36 // (2 * FIELDS_PER_SLIDE - 1)) and set(bags.sizes) == {FIELDS_PER_SLIDE * 4} and bags.classes == sorted([NEGATIVE, POSITIVE])
