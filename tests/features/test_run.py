"""``run_import``: every layout becomes an embeddings table ``EmbeddingsTable.read`` accepts, the
metadata CSV is joined, checks that span slides name both files, and a failed import leaves no
table (and an earlier one untouched) with its MLflow run FAILED."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sslray import storage
from sslray.artifacts.embeddings import EmbeddingsTable
from sslray.features.run import ImportConfig, conform, positions, run_import
from tests.features.test_readers import write_h5, write_histossl


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    """One MLflow store for the module (creating a SQLite store costs seconds); outputs differ per test."""
    return str(tmp_path_factory.mktemp("runs"))


def _import(src: Path, out: Path, run_dir: str, **kwargs) -> EmbeddingsTable:
    run_import(ImportConfig(src=str(src), out=str(out), run_dir=run_dir, **kwargs))
    return EmbeddingsTable.read(str(out))


def _runs(run_dir: str) -> dict:
    client = mlflow.MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    return {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("sslray").experiment_id)}


def _by_tile(table: EmbeddingsTable) -> pd.DataFrame:
    frame = table.table.drop_columns(["embedding"]).to_pandas()
    frame["embedding"] = list(table.matrix())
    return frame.set_index("tile_id")


def test_histossl_round_trips_values_coords_and_ids_unnormalised_and_tracked(tmp_path, run_dir):
    arrays = write_histossl(tmp_path / "phikon", {"s1": 4, "s2": 3})
    table = _import(tmp_path / "phikon", tmp_path / "emb" / "phikon", run_dir)
    frame = _by_tile(table)
    assert table.dim == 6 and len(frame) == 7 and frame.index.is_unique
    row = frame.loc["s2:1"]
    np.testing.assert_array_equal(row["embedding"], arrays["s2"][1, 3:].astype(np.float32))  # not re-normalised
    assert (row["slide_id"], row["image_id"], row["x"], row["y"], row["level"]) == ("s2", "s2", 224, 448, 16)
    assert table.table.schema.field("x").type == pa.int64() and row["source"] == "s2/features.npy"
    assert table.checkpoint == f"imported:histossl:{tmp_path / 'phikon'}"
    info = storage.read_json(str(tmp_path / "emb" / "phikon" / "_SUCCESS"))
    assert info["l2_normalized"] is False and (info["n_rows"], info["n_slides"], info["dim"]) == (7, 2, 6)
    run = _runs(run_dir)["import phikon"]
    assert run.info.status == "FINISHED" and run.data.metrics["n_rows"] == 7
    assert run.data.tags["sslray.stage"] == "import" and run.data.tags["sslray.format"] == "histossl"
    assert run.data.tags["sslray.embeddings"] == str(tmp_path / "emb" / "phikon")


def test_h5_round_trips_with_coords_and_level(tmp_path, run_dir):
    a = write_h5(tmp_path / "clam" / "h5_files" / "a.h5", 3, seed=1, level=2)
    write_h5(tmp_path / "clam" / "h5_files" / "b.h5", 2, seed=2, batch_axis=True, level=2)
    frame = _by_tile(_import(tmp_path / "clam", tmp_path / "uni", run_dir))
    np.testing.assert_array_equal(np.stack(frame.loc[["a:0", "a:1", "a:2"], "embedding"]), a)
    assert frame.loc["a:2", "x"] == 512 and frame.loc["a:2", "y"] == 1024 and set(frame["level"]) == {2}
    assert sorted(set(frame["slide_id"])) == ["a", "b"] and frame.loc["b:1", "source"] == "h5_files/b.h5"


def test_a_table_round_trips_by_its_id_column_and_prefix(tmp_path, run_dir):
    pd.DataFrame({"case": ["p", "q", "p"], "f_0": [1.0, 2.0, 3.0], "f_1": [4.0, 5.0, 6.0], "area": [1, 2, 3]}) \
        .to_csv(tmp_path / "feats.csv", index=False)
    table = _import(tmp_path / "feats.csv", tmp_path / "tab", run_dir, slide_id_column="case", feature_prefix="f_")
    frame = _by_tile(table)
    assert table.dim == 2 and list(frame.index) == ["p:0", "p:1", "q:0"]
    np.testing.assert_array_equal(frame.loc["p:1", "embedding"], [3.0, 6.0])
    assert "x" not in frame.columns and table.checkpoint.startswith("imported:table:")


def test_metadata_is_joined_onto_every_tile_and_unmatched_slides_are_listed(tmp_path, run_dir, caplog):
    write_histossl(tmp_path / "src", {"s1": 2, "s2": 2})
    (tmp_path / "meta.csv").write_text("slide_id,patient_id,label,time\ns1,P01,tumour,12.5\ns9,P09,normal,3\n")
    with caplog.at_level(logging.WARNING):
        frame = _by_tile(_import(tmp_path / "src", tmp_path / "emb", run_dir, metadata=str(tmp_path / "meta.csv")))
    assert list(frame.loc[["s1:0", "s1:1"], "label"]) == ["tumour", "tumour"] and frame.loc["s1:1", "time"] == 12.5
    assert frame.loc["s2:0", ["patient_id", "label"]].isna().all()
    assert "lists 1 slide(s) without features (left out): s9" in caplog.text
    assert "1 slide(s) have no row in metadata" in caplog.text and caplog.text.rstrip().endswith("s2")


@pytest.mark.parametrize("csv, message", [
    ("slide_id,label\ns1,a\ns1,b\n", r"slide 's1' has two rows \(2 and 3\)"),
    ("slide,label\ns1,a\n", "no slide_id column"),
    ("slide_id,x\ns1,3\n", r"column\(s\) \['x'\] are written by the import itself"),
])
def test_a_bad_metadata_csv_is_refused_before_any_work(tmp_path, run_dir, csv, message):
    write_histossl(tmp_path / "src", {"s1": 2})
    (tmp_path / "meta.csv").write_text(csv)
    with pytest.raises(ValueError, match=message):
        run_import(ImportConfig(src=str(tmp_path / "src"), out=str(tmp_path / "emb"), run_dir=run_dir,
                                metadata=str(tmp_path / "meta.csv")))
    assert not (tmp_path / "emb").exists()


def test_a_slide_id_twice_is_refused_naming_both_files(tmp_path, run_dir):
    write_histossl(tmp_path / "src", {"s1": 2})
    write_histossl(tmp_path / "src", {"s1": 2}, flat=True)
    with pytest.raises(ValueError, match=r"slide 's1' appears twice: in .*src/s1.npy and in .*src/s1/features.npy"):
        run_import(ImportConfig(src=str(tmp_path / "src"), out=str(tmp_path / "emb"), run_dir=run_dir))


def test_feature_widths_that_differ_across_slides_are_refused_naming_both_files(tmp_path, run_dir):
    write_h5(tmp_path / "src" / "a.h5", 2, d=6)
    write_h5(tmp_path / "src" / "b.h5", 2, d=5)
    with pytest.raises(ValueError, match=r"src/b.h5 has 5 features per tile but .*src/a.h5 has 6"):
        run_import(ImportConfig(src=str(tmp_path / "src"), out=str(tmp_path / "emb"), run_dir=run_dir))


def test_a_failure_halfway_publishes_nothing_keeps_the_previous_table_and_fails_the_run(tmp_path, run_dir):
    src, out = tmp_path / "src", tmp_path / "tables" / "halfway"
    write_histossl(src, {"s1": 3, "s2": 3})
    before = _import(src, out, run_dir, name="first").table
    np.save(src / "s2" / "features.npy", np.zeros((3, 3)))  # the second slide is now corrupt
    with pytest.raises(ValueError, match="s2/features.npy: expected"):
        run_import(ImportConfig(src=str(src), out=str(out), run_dir=run_dir, overwrite=True, name="second",
                                rows_per_part=1))  # the first slide's part is written before the failure
    assert [p.name for p in out.parent.iterdir()] == ["halfway"]  # no staging left behind
    assert EmbeddingsTable.read(str(out)).table.equals(before)
    runs = _runs(run_dir)
    assert runs["import first"].info.status == "FINISHED" and runs["import second"].info.status == "FAILED"
    with pytest.raises(ValueError):
        run_import(ImportConfig(src=str(src), out=str(tmp_path / "fresh"), run_dir=run_dir))
    assert not (tmp_path / "fresh").exists()


def test_an_existing_table_or_a_foreign_folder_is_refused_before_any_work(tmp_path, run_dir):
    write_histossl(tmp_path / "src", {"s1": 2})
    _import(tmp_path / "src", tmp_path / "emb", run_dir)
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=true"):
        run_import(ImportConfig(src=str(tmp_path / "nowhere"), out=str(tmp_path / "emb"), run_dir=run_dir))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(storage.OutputError):
        run_import(ImportConfig(src=str(tmp_path / "src"), out=str(tmp_path / "mine"), run_dir=run_dir,
                                overwrite=True))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_slides_are_gathered_into_parts_of_about_rows_per_part(tmp_path, run_dir):
    write_histossl(tmp_path / "src", {"a": 3, "b": 3, "c": 3, "d": 1})
    table = _import(tmp_path / "src", tmp_path / "emb", run_dir, rows_per_part=5)
    assert sorted(p.name for p in (tmp_path / "emb").glob("*.parquet")) == ["part-000000.parquet",
                                                                          "part-000001.parquet"]
    assert table.table.num_rows == 10 and storage.read_json(str(tmp_path / "emb" / "_SUCCESS"))["n_slides"] == 4


def test_a_slide_without_tiles_is_left_out_with_a_warning(tmp_path, run_dir, caplog):
    write_histossl(tmp_path / "src", {"a": 2})
    (tmp_path / "src" / "empty").mkdir()
    np.save(tmp_path / "src" / "empty" / "features.npy", np.zeros((0, 9)))
    with caplog.at_level(logging.WARNING):
        table = _import(tmp_path / "src", tmp_path / "emb", run_dir)
    assert set(table.table.column("slide_id").to_pylist()) == {"a"} and "empty/features.npy: no tiles" in caplog.text


def test_real_mil_bags_round_trip_through_the_histossl_layout(test_data, tmp_path, run_dir):
    """Musk1's 92 bags of 166 real features each become a slide; the table holds them bag by bag."""
    musk = np.load(test_data / "mil" / "Musk1.npz")
    instances, bag_id = musk["instances"], musk["bag_id"]
    for bag in np.unique(bag_id):
        rows = instances[bag_id == bag]
        path = tmp_path / "musk" / f"bag{bag:03d}" / "features.npy"
        path.parent.mkdir(parents=True)
        np.save(path, np.column_stack([np.zeros((len(rows), 3)), rows]))
    table = _import(tmp_path / "musk", tmp_path / "emb", run_dir)
    assert table.dim == 166 and table.table.num_rows == 476
    frame = _by_tile(table)
    assert frame["slide_id"].nunique() == 92
    first = np.unique(bag_id)[0]
    np.testing.assert_array_equal(np.stack(frame[frame["slide_id"] == f"bag{first:03d}"]["embedding"]),
                                  instances[bag_id == first].astype(np.float32))


def test_features_on_object_storage_import_to_object_storage(s3_server, tmp_path, run_dir):
    from sslray.tracking import TrackingConfig

    a = write_h5(tmp_path / "trident" / "features_uni_v1" / "a.h5", 3, seed=4)
    write_h5(tmp_path / "trident" / "features_uni_v1" / "b.h5", 2, seed=5)
    fs, _ = storage.filesystem(s3_server)
    fs.put(str(tmp_path / "trident"), f"{s3_server}/features/trident", recursive=True)
    out = f"{s3_server}/emb/uni"
    run_import(ImportConfig(src=f"{s3_server}/features/trident", out=out, run_dir=run_dir,
                            tracking=TrackingConfig(uri=f"sqlite:///{run_dir}/mlflow.db")))
    frame = _by_tile(EmbeddingsTable.read(out))
    np.testing.assert_array_equal(np.stack(frame.loc[["a:0", "a:1", "a:2"], "embedding"]), a)
    assert frame.loc["b:1", "source"] == "features_uni_v1/b.h5" and len(frame) == 5


def test_whole_number_positions_are_integers_and_parts_take_the_first_slides_schema():
    assert positions(np.array([0.0, 224.0])).dtype == np.int64
    assert positions(np.array([0.5, 1.0])).dtype == np.float64
    first = pa.table({"x": pa.array([1.5]), "level": pa.array([0])})
    widened = conform(pa.table({"x": pa.array([2])}), first.schema, "b.h5", "a.h5")
    assert widened.schema == first.schema and widened.column("level").null_count == 1
    with pytest.raises(ValueError, match=r"b.h5 has column\(s\) \['y'\] that a.h5 \(the first slide\) lacks"):
        conform(pa.table({"x": [1.0], "y": [2.0]}), first.schema, "b.h5", "a.h5")
    with pytest.raises(ValueError, match="b.h5: its columns do not match those of a.h5"):
        conform(pa.table({"x": pa.array([1.5]), "level": pa.array([0.5])}), first.schema, "b.h5", "a.h5")


@pytest.mark.parametrize("bad", [{"src": ""}, {"out": ""}, {"format": "pt"}, {"rows_per_part": 0},
                                 {"slide_id_column": ""}])
def test_missing_inputs_and_bad_values_are_refused(bad):
    with pytest.raises(ValueError):
        ImportConfig(**{"src": "s", "out": "o", **bad})
