"""The ingest run: the plan, the fan-out of tiling (in process or on Ray Data), real data.

Which files are sources, one source into a part and the parts into the store are tested in
test_sources.py, test_tiling.py and test_assembly.py, the settings in test_ingest_config.py,
resuming in test_ingest_resume.py.
"""

import json

import numpy as np
import pytest
import tifffile

from sslray.data.ingest import IngestConfig, IngestError, _run_tiling, check_source_and_dest, ingest_folder
from sslray.data.parts import PLAN, load_part
from sslray.data.readers import natural_key
from sslray.data.sources import SourceImage
from tests.conftest import write_png
from tests.data.images import JUMP, cell_painting_plate, rgb_folder


def _tiny_sources(tmp_path, names=("a.png", "b.png", "c.png")) -> list[SourceImage]:
    rng = np.random.default_rng(0)
    for name in names:
        write_png(tmp_path / "src" / name, rng.integers(0, 255, (64, 32, 3), dtype=np.uint8))
    return [SourceImage(tmp_path / "src" / name, name) for name in names]


def test_run_tiling_in_process_tiles_each_source_in_order(tmp_path):
    todo = _tiny_sources(tmp_path)
    cfg = IngestConfig(src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32, workers=0)
    results = list(_run_tiling(todo, cfg, str(tmp_path / "staging"), cfg.scaling))
    assert [(r.rel, r.ok, r.n_tiles) for r in results] == [("a.png", True, 2), ("b.png", True, 2), ("c.png", True, 2)]


def test_run_tiling_on_ray_data_gives_every_result_and_finished_parts(ray_session, tmp_path):
    todo = _tiny_sources(tmp_path)
    (tmp_path / "src" / "c.png").write_bytes(b"garbage")
    cfg = IngestConfig(src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32, workers=2)
    staging = str(tmp_path / "staging")
    results = {r.rel: r for r in _run_tiling(todo, cfg, staging, cfg.scaling)}  # any order
    assert sorted(results) == ["a.png", "b.png", "c.png"]
    assert results["a.png"].ok and results["a.png"] == load_part(staging, "a.png")
    assert not results["c.png"].ok and "c.png" in results["c.png"].reason and load_part(staging, "c.png") is None


def test_one_file_ingests_into_a_store_beside_it_and_resumes(tmp_path):
    src = rgb_folder(tmp_path)
    (src / "tumor" / "a.png").rename(src / "tumor" / "a.keep")
    (src / "tumor" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = IngestConfig(workers=0, src=str(src / "tumor" / "a.png"), out=str(src / "tumor" / "store"), tile_size=32)
    with pytest.raises(IngestError, match="a.png"):
        ingest_folder(cfg)
    plan = json.loads((src / "tumor" / ".store.partial" / PLAN).read_text())
    assert plan["sources"] == [["a.png", None, None, None]] and "stride" not in plan  # the default grid as before
    (src / "tumor" / "a.keep").replace(src / "tumor" / "a.png")  # the user fixes the file and reruns
    store = ingest_folder(cfg)
    assert len(store) == 6 and set(store.manifest["source"]) == {"a.png"} and store.manifest["label"].isna().all()
    with pytest.raises(IngestError, match="the destination .* is the source file"):
        check_source_and_dest(cfg.src, cfg.src)
    with pytest.raises(IngestError, match="the source file .* is inside the destination"):
        check_source_and_dest(cfg.src, str(src))


def test_csv_labels_groups_and_multichannel_tiff(synthetic_images, tmp_path):
    root, labels = synthetic_images
    store = ingest_folder(IngestConfig(workers=0, src=str(root), out=str(tmp_path / "s"), labels=str(labels), tile_size=64))
    assert store.info.channels == ["ch0", "ch1"] or store.info.n_channels == 2
    m = store.manifest
    assert len(store) == 4 * 6 * 4 and m["group"].nunique() == 24 and set(m["label"]) == {
        "round", "spindle", "punctate", "fragmented"}
    assert m["tissue_fraction"].between(0, 1).all()


def test_corrupt_image_stops_ingest_and_publishes_nothing(tmp_path):
    src = rgb_folder(tmp_path)
    (src / "tumor" / "z_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(IngestError, match="z_broken.png"):
        ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.partial", "src"]  # hidden, kept to resume


def test_real_tiles_ingest(test_data, tmp_path):
    src = test_data / "crc_samples" / "kather2016"
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=128))
    assert len(store) == 24 and store.manifest["label"].nunique() == 8


def test_real_mibi_marker_folders(test_data, tmp_path):
    src = test_data / "mibi_simpleseg"
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=256,
                                       layout="channel-folders"))
    fov = sorted(p for p in src.iterdir() if p.is_dir())[0]
    assert store.info.channels == sorted((p.name.split(".")[0] for p in fov.glob("*.tif")), key=natural_key)
    assert store.info.n_channels == 41 and len(store) == 2 * 16


def test_real_qptiff_and_plain_tiff(test_data, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "vectra.qptiff").symlink_to(test_data / "multiplex" / "small_vectra.qptiff")
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=240))
    assert store.info.n_channels == 3 and len(store) == (1440 // 240) * (1920 // 240)


def test_real_imc_float_counts(test_data, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in (test_data / "imc_cytomapper").glob("*_imc.tiff"):
        (src / f.name).symlink_to(f)
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=50, log1p=True,
                                       float_max=[6.0]))
    assert store.info.n_channels == 5 and store.info.dtype == "uint16" and len(store) == 3 * 4


def test_format_forces_the_reader(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "plain.tif", np.zeros((64, 96, 3), np.uint8), photometric="rgb")
    cfg = IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32, mpp=1.0)
    assert cfg.reader_for(src / "plain.tif") == "slide"  # a target resolution makes TIFFs slides
    forced = IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32, mpp=1.0, format="image")
    assert forced.reader_for(src / "plain.tif") == "image" and len(ingest_folder(forced)) == 6
    with pytest.raises(ValueError, match="format must be"):
        IngestConfig(format="svs")


def test_channel_files_need_a_pattern_and_missing_channels_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"channel-files needs channel_pattern.*\(\?P<channel>"):
        IngestConfig(layout="channel-files")
    cell_painting_plate(tmp_path / "src", wells=("r01c01",), sites=(1,))
    (tmp_path / "src" / "r01c01f01p01-ch3sk1fk1fl1.tiff").unlink()
    with pytest.raises(IngestError, match=r"r01c01f01p01-ch\*sk1fk1fl1.tiff: channel file\(s\) \['3'\] not found"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s"), tile_size=32,
                                   layout="channel-files", channel_pattern=JUMP, channels=["1", "2", "3"]))
    with pytest.raises(IngestError, match="foreground_channel 'DAPI' is not one of its channels"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), out=str(tmp_path / "s2"), tile_size=32,
                                   layout="channel-files", channel_pattern=JUMP, foreground_channel="DAPI"))
