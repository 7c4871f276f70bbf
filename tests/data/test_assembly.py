"""Assembly: parts into one store in source order; a source that does not match the first fails or is skipped."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from sslray import storage
from sslray.data.assembly import _mismatch, assemble
from sslray.data.ingest import IngestConfig, IngestError, ingest_folder
from sslray.data.parts import load_part
from sslray.data.sources import IngestReport, SourceImage
from sslray.data.tiling import tile_source
from tests.conftest import write_png
from tests.data.images import marker_field, rgb_folder


def test_channel_count_mismatch_is_named(tmp_path):
    src = rgb_folder(tmp_path)
    write_png(src / "tumor" / "zz_gray.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(IngestError, match="zz_gray.png: has 1 channels but earlier images have 3"):
        ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32))


def test_channel_folders_select_markers_and_name_mismatches(tmp_path):
    marker_field(tmp_path / "src" / "fov1", ["CD8", "DAPI", "PanCK"])
    marker_field(tmp_path / "src" / "fov2", ["CD8", "DAPI", "Ki67"])
    picked = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32,
                                        layout="channel-folders", channels=["DAPI", "CD8"]))
    assert picked.info.channels == ["DAPI", "CD8"] and len(picked) == 8
    with pytest.raises(IngestError, match=r"fov2: channels \['CD8', 'DAPI', 'Ki67'\] differ"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s2"), tile_size=32,
                                   layout="channel-folders"))
    assert not (tmp_path / "s2").exists()


def test_skip_mode_reports_bad_files_and_keeps_the_rest(tmp_path):
    src = rgb_folder(tmp_path)
    (src / "tumor" / "broken.png").write_bytes(b"garbage")
    write_png(src / "tumor" / "small.png", np.zeros((10, 10, 3), np.uint8))
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32, on_error="skip"))
    report = json.loads((tmp_path / "s" / "ingest_report.json").read_text())
    reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in report["skipped"]}
    assert set(reasons) == {"broken.png", "small.png"}
    assert "smaller than the tile size 32" in reasons["small.png"]
    assert len(store) == 10


def test_channel_mismatch_is_skipped_and_reported_in_skip_mode(tmp_path):
    src = rgb_folder(tmp_path)
    write_png(src / "tumor" / "zz_gray.png", np.zeros((64, 64), np.uint8))
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32, on_error="skip"))
    report = json.loads((tmp_path / "s" / "ingest_report.json").read_text())
    assert [r["path"].rsplit("/", 1)[-1] for r in report["skipped"]] == ["zz_gray.png"]
    assert len(store) == 10 and store.info.channels == ["R", "G", "B"]


def test_mismatch_names_channel_count_names_and_dtype():
    writer = SimpleNamespace(channels=["R", "G", "B"], dtype=np.dtype("uint8"))
    assert _mismatch(["R", "G", "B"], np.dtype("uint8"), writer) is None
    assert _mismatch(["gray"], np.dtype("uint8"), writer) == "has 1 channels but earlier images have 3"
    assert _mismatch(["B", "G", "R"], np.dtype("uint8"), writer).startswith("channels ['B', 'G', 'R'] differ")
    assert _mismatch(["R", "G", "B"], np.dtype("uint16"), writer) == "dtype uint16 differs from earlier images (uint8)"


def test_parts_finished_in_any_order_are_stored_in_source_order(tmp_path):
    src = rgb_folder(tmp_path)
    cfg = IngestConfig(src=str(src), out=str(tmp_path / "s"), tile_size=32)
    sources = [SourceImage(src / "normal" / "b.png", "normal/b.png"), SourceImage(src / "tumor" / "a.png", "tumor/a.png")]
    staging = storage.begin_resumable_output(cfg.out, what="tile store", kind="tile_store")
    parts = {s.rel: tile_source(s, cfg, staging) for s in reversed(sources)}  # a.png finished first
    report = IngestReport()
    store = assemble(sources, parts, cfg, staging, cfg.scaling, report)
    assert store.manifest["source"].tolist() == ["normal/b.png"] * 4 + ["tumor/a.png"] * 6
    assert (report.n_images, report.n_tiles) == (2, 10)
    assert json.loads((tmp_path / "s" / "ingest_report.json").read_text())["n_tiles"] == 10
    assert not (tmp_path / "s" / "_ingest").exists() and load_part(str(tmp_path / "s"), "normal/b.png") is None
