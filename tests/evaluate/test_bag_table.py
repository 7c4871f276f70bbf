"""Bags from an embeddings table: grouping, targets from columns or a bags CSV, and every bad
input named by its bag, column or file before any training starts."""

import numpy as np
import pyarrow as pa
import pytest

from sslray.evaluate.bag_table import BagSource, build_bags, load_bags, read_vectors
from tests.evaluate.bag_fixtures import tile_table, write_table


def _bags(table, features, **kw):
    return build_bags(table, features, BagSource("mem://t", **kw))


def test_tiles_are_grouped_by_slide_with_their_labels_patients_and_positions():
    table, features = tile_table(n_bags=6)
    bags = _bags(table, features)
    assert bags.bag_column == "slide_id" and list(bags.ids) == [f"s{i:02d}" for i in range(6)]
    assert bags.offsets[-1] == len(features) and bags.coords.shape == (len(features), 2)
    slide = np.asarray(table.column("slide_id").to_pylist())
    np.testing.assert_array_equal(bags.tiles(3), features[slide == "s03"])
    assert list(bags.labels) == ["normal", "normal", "tumour", "tumour", "normal", "normal"]
    assert list(bags.patients) == ["p00", "p00", "p01", "p01", "p02", "p02"]
    assert bags.classes == ["normal", "tumour"] and list(bags.targets()) == [0, 0, 1, 1, 0, 0]


def test_without_slide_id_the_bags_are_patients():
    table, features = tile_table(n_bags=6)
    bags = _bags(table.drop_columns(["slide_id"]), features)
    assert bags.bag_column == "patient_id" and len(bags) == 3 and bags.patients is None


def test_a_bag_with_conflicting_labels_is_named():
    table, features = tile_table(n_bags=4)
    labels = table.column("label").to_pylist()
    labels[0] = "tumour"  # one tile of normal slide s00
    with pytest.raises(ValueError, match=r"bag 's00' has conflicting values in column 'label'"):
        _bags(table.set_column(table.column_names.index("label"), "label", pa.array(labels)), features)


def test_nan_embeddings_are_named_by_bag():
    table, features = tile_table(n_bags=4)
    features[-1, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 tiles have NaN or infinite embeddings, in bag\(s\) 's03'"):
        _bags(table, features)


def test_a_single_class_is_refused():
    table, features = tile_table(n_bags=4)
    table = table.set_column(table.column_names.index("label"), "label", pa.array(["x"] * table.num_rows))
    with pytest.raises(ValueError, match="single class"):
        _bags(table, features)


def test_a_bags_csv_gives_labels_and_patients_and_unknown_bags_are_named(tmp_path):
    table, features = tile_table(n_bags=4, patients=False)
    table = table.drop_columns(["label"])
    csv = tmp_path / "bags.csv"
    csv.write_text("bag_id,label,patient_id\ns00,a,p0\ns01,b,p0\ns02,a,p1\n")
    bags = _bags(table, features, bags_csv=str(csv))
    assert list(bags.ids) == ["s00", "s01", "s02"] and list(bags.labels) == ["a", "b", "a"]  # s03 unlabelled
    assert list(bags.patients) == ["p0", "p0", "p1"]
    csv.write_text("bag_id,label\ns00,a\ns01,b\nslide-9,a\n")
    with pytest.raises(ValueError, match=r"bags CSV .*bags.csv: 1 bag\(s\) have no tiles .*'slide-9'"):
        _bags(table, features, bags_csv=str(csv))
    csv.write_text("bag_id,class\ns00,a\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['label'\]"):
        _bags(table, features, bags_csv=str(csv))


def test_survival_targets_come_from_the_table_and_bad_times_are_named(tmp_path):
    table, features = tile_table(n_bags=6, survival=True)
    bags = _bags(table, features, survival=True)
    assert bags.labels is None and bags.time.shape == (6,) and bags.event.dtype == bool
    assert bags.targets().shape == (6, 2)
    csv = tmp_path / "surv.csv"
    csv.write_text("bag_id,time,event\ns00,3.0,1\ns01,-1,0\ns02,4,1\n")
    with pytest.raises(ValueError, match=r"bag\(s\) 's01' have a missing, negative"):
        _bags(table, features, survival=True, bags_csv=str(csv))
    csv.write_text("bag_id,time,event\ns00,3.0,2\ns01,1,0\n")
    with pytest.raises(ValueError, match=r"'s00' have an event that is not 0 or 1"):
        _bags(table, features, survival=True, bags_csv=str(csv))


def test_a_split_column_must_name_known_splits():
    table, features = tile_table(n_bags=4)
    split = ["train" if s in ("s00", "s01") else "test" for s in table.column("slide_id").to_pylist()]
    bags = _bags(table.append_column("split", pa.array(split)), features)
    assert list(bags.split) == ["train", "train", "test", "test"]
    split = ["holdout" if s == "s03" else v for s, v in zip(table.column("slide_id").to_pylist(), split)]
    with pytest.raises(ValueError, match=r"bag\(s\) 's03' have 'holdout'"):
        _bags(table.append_column("split", pa.array(split)), features)


def test_a_plain_parquet_folder_or_file_is_read(tmp_path):
    table, features = tile_table(n_bags=4)
    folder = write_table(tmp_path / "plain", table, features)
    for url in (folder, f"{folder}/part-0.parquet"):
        rest, vectors = read_vectors(url)
        assert "embedding" not in rest.column_names
        np.testing.assert_array_equal(vectors, features)
    assert len(load_bags(BagSource(folder))) == 4


def test_an_unfinished_sslray_table_is_not_read(tmp_path):
    table, features = tile_table(n_bags=4)
    folder = write_table(tmp_path / "partial", table, features)
    (tmp_path / "partial" / "_SSLRAY_WRITING").write_text('{"kind": "embeddings"}')
    with pytest.raises(FileNotFoundError, match="incomplete"):
        read_vectors(folder)
