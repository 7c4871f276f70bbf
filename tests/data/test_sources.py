"""Sources: discovery under SRC, labels from folders or a CSV, channel-file fields, magnifications."""

import json

import numpy as np
import pytest

from sslray.data.ingest import IngestConfig, IngestError, ingest_folder
from sslray.data.sources import (
    IngestReport,
    channel_file_fields,
    discover_sources,
    fail,
    linked_outside,
    magnification_field,
)
from tests.conftest import write_png
from tests.data.images import JUMP, cell_painting_plate, rgb_folder


def test_discovery_lists_images_in_path_order_labelled_by_their_folder(tmp_path):
    src = rgb_folder(tmp_path)
    write_png(src / "top.png", np.zeros((8, 8), np.uint8))
    (src / "notes.txt").write_text("not an image")
    sources = discover_sources(IngestConfig(src=str(src)), IngestReport())
    assert [(s.rel, s.label) for s in sources] == [("normal/b.png", "normal"), ("top.png", None),
                                                   ("tumor/a.png", "tumor")]
    with pytest.raises(IngestError, match="source folder .*nowhere does not exist"):
        discover_sources(IngestConfig(src=str(tmp_path / "nowhere")), IngestReport())


def test_a_single_file_src_is_the_one_unlabelled_source_named_by_its_file_name(tmp_path):
    src = rgb_folder(tmp_path)
    sources = discover_sources(IngestConfig(src=str(src / "tumor" / "a.png")), IngestReport())
    assert [(s.path, s.rel, s.label) for s in sources] == [(src / "tumor" / "a.png", "a.png", None)]
    (tmp_path / "notes.txt").write_text("not an image")
    refused = [({"labels": str(tmp_path / "labels.csv")}, "a.png is a single file: --labels lists files"),
               ({"layout": "channel-folders"}, "a.png is a single file: layout channel-folders groups")]
    for settings, message in refused:
        with pytest.raises(IngestError, match=message):
            discover_sources(IngestConfig(src=str(src / "tumor" / "a.png"), **settings), IngestReport())
    with pytest.raises(IngestError, match=r"notes.txt: not an image, slide or HDF5 file.*--format"):
        discover_sources(IngestConfig(src=str(tmp_path / "notes.txt")), IngestReport())
    forced = discover_sources(IngestConfig(src=str(tmp_path / "notes.txt"), format="image"), IngestReport())
    assert [s.rel for s in forced] == ["notes.txt"]


def test_magnification_field_pairs_one_field_across_magnifications():
    assert magnification_field("P1/40X/SOB-P1-40-001.png") == (40.0, "P1/SOB-P1-*-001")
    assert magnification_field("P1/100X/SOB-P1-100-001.png") == (100.0, "P1/SOB-P1-*-001")
    assert magnification_field("P1/img_20x_3.tif") == (20.0, "P1/img_*_3")
    assert magnification_field("P1/img-3.png") is None


def test_channel_file_fields_group_files_that_differ_only_in_the_channel(tmp_path):
    cell_painting_plate(tmp_path / "plate1", wells=("r01c01",), sites=(1, 2), channels=2, size=8)
    fields = channel_file_fields(tmp_path, JUMP)
    assert sorted(fields) == ["plate1/r01c01f01p01-ch*sk1fk1fl1.tiff", "plate1/r01c01f02p01-ch*sk1fk1fl1.tiff"]
    field = fields["plate1/r01c01f02p01-ch*sk1fk1fl1.tiff"]
    assert sorted(field.channel_files) == ["1", "2"] and field.extra == {"well": "r01c01", "site": "02"}
    assert field.channel_files["2"].name == "r01c01f02p01-ch2sk1fk1fl1.tiff"


def test_fail_stops_with_the_resume_hint_or_records_the_skip():
    report = IngestReport()
    with pytest.raises(IngestError, match=r"a.png: broken \(use --on-error skip.*the 2 source\(s\) tiled so far"):
        fail(IngestConfig(src="s"), report, "a.png", "broken", kept=2)
    fail(IngestConfig(src="s", on_error="skip"), report, "a.png", "a.png: broken")
    assert report.skipped == [{"path": "a.png", "reason": "a.png: broken"}]


def test_sources_reached_through_a_symlink_out_of_src_are_named(tmp_path):
    src = rgb_folder(tmp_path)
    write_png(tmp_path / "elsewhere" / "c.png", np.zeros((8, 8), np.uint8))
    (src / "linked.png").symlink_to(tmp_path / "elsewhere" / "c.png")
    report = IngestReport()
    sources = discover_sources(IngestConfig(src=str(src)), report)
    assert report.linked_outside == ["linked.png"] == linked_outside(sources, src)


def test_missing_file_in_csv_stops_with_its_name_and_writes_nothing(tmp_path):
    src = rgb_folder(tmp_path)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\ntumor/a.png,t\nmissing/nope.png,n\n")
    with pytest.raises(IngestError, match="nope.png"):
        ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), labels=str(csv_path), tile_size=32))
    assert not (tmp_path / "s").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s")]


def test_breakhis_magnification_groups_pair_fields_across_magnifications(tmp_path):
    from sslray.data.integrity import store_summary

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for cls, patient in (("benign", "SOB_B_A-14-22549AB"), ("malignant", "SOB_M_DC-14-2523")):
        for mag in (40, 100):
            for seq in (1, 2):
                write_png(src / cls / patient / f"{mag}X" / f"{patient}-{mag}-{seq:03d}.png",
                          rng.integers(0, 255, (46, 70, 3), dtype=np.uint8))
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32,
                                       magnification_groups=True))
    m = store.manifest
    assert sorted(m["magnification"].unique()) == [40.0, 100.0]
    assert m.groupby("field_id")["magnification"].nunique().eq(2).all()  # every field at both magnifications
    assert m["field_id"].nunique() == 4 and "benign/SOB_B_A-14-22549AB/SOB_B_A-14-22549AB-*-001" in set(m["field_id"])
    assert set(m["label"]) == {"SOB_B_A-14-22549AB", "SOB_M_DC-14-2523"}  # the folder above 40X, not "40X"
    assert store_summary(store.url)["tiles_per_magnification"] == {"40X": 8, "100X": 8}


def test_magnification_groups_name_files_without_one_and_csv_columns_reach_the_manifest(tmp_path):
    src = rgb_folder(tmp_path)
    with pytest.raises(IngestError, match="b.png: no magnification in its path"):
        ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32,
                                   magnification_groups=True))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,patient_id,magnification\ntumor/a.png,t,P1,40X\nnormal/b.png,n,P2,100\n")
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "c"), tile_size=32,
                                       labels=str(labels)))
    m = store.manifest
    assert m.groupby("source")["patient_id"].first().to_dict() == {"normal/b.png": "P2", "tumor/a.png": "P1"}
    assert sorted(m["magnification"].unique()) == [40.0, 100.0]
    labels.write_text("path,label,x\ntumor/a.png,t,1\n")
    with pytest.raises(IngestError, match=r"column\(s\) \['x'\] are set by sslray"):
        ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "d"), tile_size=32,
                                   labels=str(labels)))


def test_cell_painting_channel_files_become_fields_with_well_and_site(tmp_path):
    planes = cell_painting_plate(tmp_path / "src" / "plate1")
    names = {"1": "DNA", "2": "ER", "3": "RNA", "4": "AGP", "5": "Mito"}
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32,
                                       layout="channel-files", channel_pattern=JUMP, channel_names=names,
                                       foreground_channel="DNA"))
    m = store.manifest
    assert store.info.channels == ["DNA", "ER", "RNA", "AGP", "Mito"] and store.info.dtype == "uint16"
    assert len(store) == 2 * 2 * 4 and m["image_id"].nunique() == 4
    assert set(m["well"]) == {"r01c01", "r01c02"} and set(m["site"]) == {"01", "02"}
    assert "plate1/r01c02f02p01-ch*sk1fk1fl1" in set(m["image_id"])
    row = m[(m.well == "r01c02") & (m.site == "02") & (m.x == 32) & (m.y == 0)].index[0]
    np.testing.assert_array_equal(store.read(row, row + 1)[0, 4], planes[("r01c02", 2, 5)][0:32, 32:64])
    # the nuclei of the DNA channel, not the channel mean, decide the foreground
    corner = m[(m.x == 0) & (m.y == 0)]["tissue_fraction"]
    assert (corner > 0).all() and (m[(m.x == 32) & (m.y == 32)]["tissue_fraction"] == 0).all()


def test_channel_files_take_labels_from_a_csv_keyed_by_field(tmp_path):
    cell_painting_plate(tmp_path / "src" / "plate1")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,perturbation\nplate1/r01c01f01p01-ch*sk1fk1fl1.tiff,ctrl,DMSO\n"
                      "plate1/r01c02f01p01-ch*sk1fk1fl1.tiff,treated,cmpd7\nplate1/r09c09f01p01-ch*.tiff,x,y\n")
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32,
                                       layout="channel-files", channel_pattern=JUMP, labels=str(labels),
                                       on_error="skip"))
    m = store.manifest
    assert m.groupby("well")["perturbation"].first().to_dict() == {"r01c01": "DMSO", "r01c02": "cmpd7"}
    report = json.loads((tmp_path / "s" / "ingest_report.json").read_text())
    assert "r09c09" in report["skipped"][0]["path"] and "fields are named like" in report["skipped"][0]["reason"]
