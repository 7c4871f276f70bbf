"""Issue 11: an evaluate input that cannot be probed as asked is refused before Ray starts."""

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslray import storage
from sslray.cli import main
from sslray.config import load_config
from sslray.evaluate.linear_probe import grouped_split
from sslray.evaluate.run import EvaluateConfig, load_probe_data

DIM = 4


def _table(path, labels, groups=None, image_ids=None) -> str:
    """An embeddings table as ``sslray embed`` writes it: parquet + ``_SUCCESS``."""
    n = len(labels)
    columns = {"tile_id": pa.array([f"t{i}" for i in range(n)]), "label": pa.array(labels, pa.string())}
    if groups is not None:
        columns["group"] = pa.array(groups, pa.string())
    columns["image_id"] = pa.array(image_ids if image_ids is not None else [f"img{i // 2}" for i in range(n)])
    table = pa.table(columns)
    flat = pa.array(np.random.default_rng(0).normal(size=n * DIM).astype(np.float32))
    table = table.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, DIM))
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-0.parquet")
    storage.mark_complete(str(path), {"n_rows": n})
    return str(path)


def _labels(n_per_class: int, classes=("a", "b")) -> list[str]:
    return [c for c in classes for _ in range(n_per_class)]


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    """Every check here must happen before Ray: starting it would fail the test."""
    def refuse():
        raise AssertionError("Ray was started before the inputs were checked")
    monkeypatch.setattr("sslray.runtime.ensure_ray", refuse)


def test_an_explicit_group_column_that_is_absent_is_an_error_listing_the_columns(tmp_path):
    table = _table(tmp_path / "emb", _labels(8), groups=[f"p{i // 2}" for i in range(16)])
    cfg = EvaluateConfig(embeddings=table, group_column="patient")
    with pytest.raises(ValueError, match=r"emb: group_column 'patient' is not a column of the table \(columns: "
                                         r"tile_id, label, group, image_id, embedding\)"):
        load_probe_data(cfg)


def test_an_explicit_group_column_with_empty_rows_is_an_error(tmp_path):
    table = _table(tmp_path / "emb", _labels(8), groups=[None] * 3 + [f"p{i // 2}" for i in range(13)])
    with pytest.raises(ValueError, match="group_column 'group' is empty for 3 of 16 labelled tiles"):
        load_probe_data(EvaluateConfig(embeddings=table, group_column="group"))


def test_the_default_uses_group_when_every_tile_has_one(tmp_path, caplog):
    groups = [f"p{i // 2}" for i in range(16)]
    data = load_probe_data(EvaluateConfig(embeddings=_table(tmp_path / "emb", _labels(8), groups=groups)))
    assert data.group_column == "group" and list(data.groups) == groups
    assert not caplog.records


@pytest.mark.parametrize("groups", [None, [None] * 16], ids=["no-column", "empty-column"])
def test_the_default_falls_back_to_image_id_and_says_so(tmp_path, caplog, groups):
    table = _table(tmp_path / "emb", _labels(8), groups=groups)
    data = load_probe_data(EvaluateConfig(embeddings=table))  # caplog sees only what shows at the default level
    assert data.group_column == "image_id" and data.groups[0] == "img0"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "grouping the probe's splits by 'image_id'" in caplog.text and table in caplog.text


def test_the_shipped_config_leaves_the_group_column_to_the_default():
    cfg = load_config(EvaluateConfig, "configs/evaluate/linear_probe.yaml", ["embeddings=somewhere"])
    assert cfg.group_column is None
    assert load_config(EvaluateConfig, None, ["embeddings=x", "group_column=patient"]).group_column == "patient"


def test_a_single_class_is_refused_with_the_table_column_and_counts(tmp_path):
    table = _table(tmp_path / "emb", _labels(12, classes=("tumour",)))
    with pytest.raises(ValueError, match=rf"{table}: column 'label' has a single class; a probe needs at least 2 "
                                         r"\(class counts: tumour: 12 tiles in 6 groups\)"):
        load_probe_data(EvaluateConfig(embeddings=table))


def test_a_class_too_small_for_the_splits_is_refused_with_the_counts(tmp_path):
    labels = _labels(8) + ["rare"] * 4
    table = _table(tmp_path / "emb", labels, groups=[f"p{i // 2}" for i in range(20)])  # 'rare': 2 patients
    with pytest.raises(ValueError, match=r"class\(es\) 'rare' of column 'label' have fewer than 3 'group' groups.*"
                                         r"a: 8 tiles in 4 groups, b: 8 tiles in 4 groups, rare: 4 tiles in 2 groups"):
        load_probe_data(EvaluateConfig(embeddings=table))


def test_grouped_split_refuses_a_single_class():
    with pytest.raises(ValueError, match="single class"):
        grouped_split(np.array(["a"] * 8), None, 0.25, seed=0)


@pytest.mark.parametrize("extra, expected", [
    ([], "column 'label' has a single class"),
    (["group_column=patient"], "group_column 'patient' is not a column"),
])
def test_the_cli_refuses_in_one_line_with_exit_2_before_ray(tmp_path, capsys, extra, expected):
    table = _table(tmp_path / "emb", _labels(12, classes=("tumour",)), groups=[f"p{i // 2}" for i in range(12)])
    assert main(["evaluate", "--embeddings", table, f"out={tmp_path / 'runs'}", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sslray evaluate: error: ") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "runs" / "tune").exists()  # no Tune trial ran
