"""Folder ingest: labels from folders or CSV, tiling, and bad input named by file."""

import json

import numpy as np
import pytest
import tifffile

from sslray.data.foreground import foreground_mask, otsu_threshold
from sslray.data.ingest import IngestConfig, IngestError, ingest_folder
from sslray.data.readers import ImageReadError, natural_key, read_image
from tests.conftest import write_png


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    write_png(tmp_path / "src" / "tumor" / "a.png", rng.integers(0, 255, (70, 100, 3), dtype=np.uint8))
    write_png(tmp_path / "src" / "normal" / "b.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return tmp_path / "src"


def test_subfolder_labels_and_tiling(tmp_path):
    store = ingest_folder(IngestConfig(workers=0, src=str(_folder(tmp_path)), dest=str(tmp_path / "s"), tile_size=32))
    m = store.manifest
    # a.png 100x70 -> 3x2 tiles, b.png 64x64 -> 2x2 tiles; ragged borders dropped
    assert len(store) == 10 and store.info.channels == ["R", "G", "B"]
    assert sorted(m["label"].unique()) == ["normal", "tumor"]
    assert set(zip(m.loc[m.source == "tumor/a.png", "x"], m.loc[m.source == "tumor/a.png", "y"])) == {
        (x, y) for x in (0, 32, 64) for y in (0, 32)}
    original = read_image(tmp_path / "src" / "tumor" / "a.png")
    row = m[(m.source == "tumor/a.png") & (m.x == 32) & (m.y == 32)].index[0]
    np.testing.assert_array_equal(store.read(row, row + 1)[0], original[:, 32:64, 32:64])


def test_csv_labels_groups_and_multichannel_tiff(synthetic_images, tmp_path):
    root, labels = synthetic_images
    store = ingest_folder(IngestConfig(workers=0, src=str(root), dest=str(tmp_path / "s"), labels=str(labels), tile_size=64))
    assert store.info.channels == ["ch0", "ch1"] or store.info.n_channels == 2
    m = store.manifest
    assert len(store) == 4 * 6 * 4 and m["group"].nunique() == 24 and set(m["label"]) == {
        "round", "spindle", "punctate", "fragmented"}
    assert m["tissue_fraction"].between(0, 1).all()


def test_missing_file_in_csv_stops_with_its_name_and_writes_nothing(tmp_path):
    src = _folder(tmp_path)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\ntumor/a.png,t\nmissing/nope.png,n\n")
    with pytest.raises(IngestError, match="nope.png"):
        ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), labels=str(csv_path), tile_size=32))
    assert not (tmp_path / "s").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s")]


def test_corrupt_image_stops_ingest_and_publishes_nothing(tmp_path):
    src = _folder(tmp_path)
    (src / "tumor" / "z_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(IngestError, match="z_broken.png"):
        ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.partial", "src"]  # hidden, kept to resume


def test_skip_mode_reports_bad_files_and_keeps_the_rest(tmp_path):
    src = _folder(tmp_path)
    (src / "tumor" / "broken.png").write_bytes(b"garbage")
    write_png(src / "tumor" / "small.png", np.zeros((10, 10, 3), np.uint8))
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32, on_error="skip"))
    report = json.loads((tmp_path / "s" / "ingest_report.json").read_text())
    reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in report["skipped"]}
    assert set(reasons) == {"broken.png", "small.png"}
    assert "smaller than the tile size 32" in reasons["small.png"]
    assert len(store) == 10


def test_channel_count_mismatch_is_named(tmp_path):
    src = _folder(tmp_path)
    write_png(src / "tumor" / "zz_gray.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(IngestError, match="zz_gray.png: has 1 channels but earlier images have 3"):
        ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32))


def test_readers_give_channels_first(tmp_path):
    gray = write_png(tmp_path / "g.png", np.zeros((20, 30), np.uint8))
    assert read_image(gray).shape == (1, 20, 30)
    stack = np.arange(5 * 20 * 30, dtype=np.uint16).reshape(5, 20, 30)
    tifffile.imwrite(tmp_path / "m.tif", stack, photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "m.tif"), stack)
    with pytest.raises(ImageReadError, match="unsupported image format"):
        read_image(tmp_path / "x.bmp")
    nan = np.full((1, 20, 20), np.nan, np.float32)
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(tmp_path / "nan.tif")


def test_otsu_finds_the_foreground_side():
    image = np.zeros((1, 40, 40), np.uint8)
    image[:, :10, :10] = 200  # small bright object on dark background
    threshold, bright_background = otsu_threshold(image)
    assert 0 < threshold < 200 and not bright_background
    assert foreground_mask(image).sum() == 100 and foreground_mask(255 - image).sum() == 100  # either polarity


def test_real_tiles_ingest(test_data, tmp_path):
    src = test_data / "crc_samples" / "kather2016"
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=128))
    assert len(store) == 24 and store.manifest["label"].nunique() == 8


def _marker_field(folder, markers, size=64, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    planes = {}
    for m in markers:
        planes[m] = rng.integers(0, 65535, (size, size), dtype=np.uint16)
        tifffile.imwrite(folder / f"{m}.tif", planes[m])
    return planes


def test_channel_folders_stack_markers_in_name_order(tmp_path):
    a = _marker_field(tmp_path / "src" / "tumor" / "fov1", ["CD8", "DAPI", "PanCK"], seed=1)
    _marker_field(tmp_path / "src" / "stroma" / "fov2", ["CD8", "DAPI", "PanCK"], seed=2)
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), dest=str(tmp_path / "s"), tile_size=32,
                                       layout="channel-folders"))
    assert store.info.channels == ["CD8", "DAPI", "PanCK"] and store.info.dtype == "uint16"
    m = store.manifest
    assert len(store) == 8 and set(m["label"]) == {"tumor", "stroma"}
    row = m[(m.source == "tumor/fov1") & (m.x == 32) & (m.y == 0)].index[0]
    np.testing.assert_array_equal(store.read(row, row + 1)[0, 1], a["DAPI"][0:32, 32:64])


def test_channel_folders_select_markers_and_name_mismatches(tmp_path):
    _marker_field(tmp_path / "src" / "fov1", ["CD8", "DAPI", "PanCK"])
    _marker_field(tmp_path / "src" / "fov2", ["CD8", "DAPI", "Ki67"])
    picked = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), dest=str(tmp_path / "s"), tile_size=32,
                                        layout="channel-folders", channels=["DAPI", "CD8"]))
    assert picked.info.channels == ["DAPI", "CD8"] and len(picked) == 8
    with pytest.raises(IngestError, match=r"fov2: channels \['CD8', 'DAPI', 'Ki67'\] differ"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), dest=str(tmp_path / "s2"), tile_size=32,
                                   layout="channel-folders"))
    assert not (tmp_path / "s2").exists()


def test_real_mibi_marker_folders(test_data, tmp_path):
    src = test_data / "mibi_simpleseg"
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=256,
                                       layout="channel-folders"))
    fov = sorted(p for p in src.iterdir() if p.is_dir())[0]
    assert store.info.channels == sorted((p.name.split(".")[0] for p in fov.glob("*.tif")), key=natural_key)
    assert store.info.n_channels == 41 and len(store) == 2 * 16


def test_real_qptiff_and_plain_tiff(test_data, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "vectra.qptiff").symlink_to(test_data / "multiplex" / "small_vectra.qptiff")
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=240))
    assert store.info.n_channels == 3 and len(store) == (1440 // 240) * (1920 // 240)


def test_hdf5_patch_files_images_and_names(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 65535, (5, 4, 40, 40), dtype=np.uint16)
    (tmp_path / "src" / "spotA").mkdir(parents=True)
    with h5py.File(tmp_path / "src" / "spotA" / "patches.h5", "w") as f:
        f.create_dataset("Images", data=images, chunks=(1, 4, 40, 40))
        f.create_dataset("Names", data=np.array([b"DNA1", b"CD3", b"CD20", b"Ki67"]))
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), dest=str(tmp_path / "s"), tile_size=32))
    m = store.manifest
    assert store.info.channels == ["DNA1", "CD3", "CD20", "Ki67"] and len(store) == 5
    assert m["image_id"].tolist() == [f"spotA/patches#{i}" for i in range(5)] and set(m["label"]) == {"spotA"}
    np.testing.assert_array_equal(store.read(0, 5), images[:, :, :32, :32])


def test_hdf5_without_images_is_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    (tmp_path / "src").mkdir()
    with h5py.File(tmp_path / "src" / "bad.h5", "w") as f:
        f.create_dataset("Other", data=np.zeros(3))
    with pytest.raises(IngestError, match="bad.h5: HDF5 file has no 'Images' dataset"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), dest=str(tmp_path / "s"), tile_size=32))


def test_float_images_need_an_explicit_scale(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    counts = np.stack([np.full((32, 32), 50.0), np.full((32, 32), 5.0)]).astype(np.float32)
    tifffile.imwrite(src / "imc.tiff", counts)
    with pytest.raises(IngestError, match=r"imc.tiff: float image with values in \[5, 50\]; pass --float-max"):
        ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32))
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32, float_max=[100.0, 10.0]))
    assert store.info.dtype == "uint16"
    np.testing.assert_array_equal(store.read(0, 1)[0, :, 0, 0], [round(0.5 * 65535)] * 2)
    logged = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "l"), tile_size=32, log1p=True,
                                        float_max=[float(np.log1p(50.0))]))
    assert logged.read(0, 1)[0, 0, 0, 0] == 65535


def test_real_imc_float_counts(test_data, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in (test_data / "imc_cytomapper").glob("*_imc.tiff"):
        (src / f.name).symlink_to(f)
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=50, log1p=True,
                                       float_max=[6.0]))
    assert store.info.n_channels == 5 and store.info.dtype == "uint16" and len(store) == 3 * 4


def test_channel_mismatch_is_skipped_and_reported_in_skip_mode(tmp_path):
    src = _folder(tmp_path)
    write_png(src / "tumor" / "zz_gray.png", np.zeros((64, 64), np.uint8))
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32, on_error="skip"))
    report = json.loads((tmp_path / "s" / "ingest_report.json").read_text())
    assert [r["path"].rsplit("/", 1)[-1] for r in report["skipped"]] == ["zz_gray.png"]
    assert len(store) == 10 and store.info.channels == ["R", "G", "B"]


def test_image_size_reads_headers_for_png_and_tiff(tmp_path):
    from sslray.data.readers import image_size

    png = write_png(tmp_path / "a.png", np.zeros((20, 30, 3), np.uint8))
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((5, 40, 50), np.uint16), photometric="minisblack")
    assert image_size(png) == (20, 30) and image_size(tmp_path / "m.tif") == (40, 50)
    from sslray.quickstart import default_tile_size

    assert default_tile_size(str(tmp_path)) == 20


def test_breakhis_magnification_groups_pair_fields_across_magnifications(tmp_path):
    from sslray.data.integrity import store_summary

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for cls, patient in (("benign", "SOB_B_A-14-22549AB"), ("malignant", "SOB_M_DC-14-2523")):
        for mag in (40, 100):
            for seq in (1, 2):
                write_png(src / cls / patient / f"{mag}X" / f"{patient}-{mag}-{seq:03d}.png",
                          rng.integers(0, 255, (46, 70, 3), dtype=np.uint8))
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32,
                                       magnification_groups=True))
    m = store.manifest
    assert sorted(m["magnification"].unique()) == [40.0, 100.0]
    assert m.groupby("field_id")["magnification"].nunique().eq(2).all()  # every field at both magnifications
    assert m["field_id"].nunique() == 4 and "benign/SOB_B_A-14-22549AB/SOB_B_A-14-22549AB-*-001" in set(m["field_id"])
    assert set(m["label"]) == {"SOB_B_A-14-22549AB", "SOB_M_DC-14-2523"}  # the folder above 40X, not "40X"
    assert store_summary(store.url)["tiles_per_magnification"] == {"40X": 8, "100X": 8}


def test_magnification_groups_name_files_without_one_and_csv_columns_reach_the_manifest(tmp_path):
    src = _folder(tmp_path)
    with pytest.raises(IngestError, match="b.png: no magnification in its path"):
        ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32,
                                   magnification_groups=True))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,patient_id,magnification\ntumor/a.png,t,P1,40X\nnormal/b.png,n,P2,100\n")
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "c"), tile_size=32,
                                       labels=str(labels)))
    m = store.manifest
    assert m.groupby("source")["patient_id"].first().to_dict() == {"normal/b.png": "P2", "tumor/a.png": "P1"}
    assert sorted(m["magnification"].unique()) == [40.0, 100.0]
    labels.write_text("path,label,x\ntumor/a.png,t,1\n")
    with pytest.raises(IngestError, match=r"column\(s\) \['x'\] are set by sslray"):
        ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "d"), tile_size=32,
                                   labels=str(labels)))


def test_npy_arrays_channels_last_or_first_and_pickles_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    chw = rng.integers(0, 65535, (5, 40, 40), dtype=np.uint16)
    np.save(src / "rgb.npy", hwc)
    np.save(src / "multi.npy", chw)
    assert read_image(src / "rgb.npy").shape == (3, 40, 40) and read_image(src / "multi.npy").shape == (5, 40, 40)
    store = ingest_folder(IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32,
                                       on_error="skip"))
    assert store.info.channels == [f"ch{i}" for i in range(5)] and len(store) == 1  # rgb.npy skipped: 3 channels
    np.testing.assert_array_equal(store.read(0, 1)[0], chw[:, :32, :32])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match="obj.npy: cannot decode"):
        read_image(tmp_path / "obj.npy")


def test_format_forces_the_reader(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "plain.tif", np.zeros((64, 96, 3), np.uint8), photometric="rgb")
    cfg = IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32, mpp=1.0)
    assert cfg.reader_for(src / "plain.tif") == "slide"  # a target resolution makes TIFFs slides
    forced = IngestConfig(workers=0, src=str(src), dest=str(tmp_path / "s"), tile_size=32, mpp=1.0, format="image")
    assert forced.reader_for(src / "plain.tif") == "image" and len(ingest_folder(forced)) == 6
    with pytest.raises(ValueError, match="format must be"):
        IngestConfig(format="svs")


JUMP = r"(?P<well>r\d+c\d+)f(?P<site>\d+)p\d+-ch(?P<channel>\d+)"


def _cell_painting_plate(folder, wells=("r01c01", "r01c02"), sites=(1, 2), channels=5, size=64):
    """JUMP-style names: one single-channel 16-bit file per channel, r01c01f01p01-ch1sk1fk1fl1.tiff."""
    rng = np.random.default_rng(0)
    planes = {}
    folder.mkdir(parents=True, exist_ok=True)
    for well in wells:
        for site in sites:
            for ch in range(1, channels + 1):
                plane = rng.integers(0, 4000, (size, size), dtype=np.uint16)
                plane[:8, :8] = 60000 if ch == 1 else 0  # nuclei only in the DNA channel
                tifffile.imwrite(folder / f"{well}f{site:02d}p01-ch{ch}sk1fk1fl1.tiff", plane)
                planes[(well, site, ch)] = plane
    return planes


def test_cell_painting_channel_files_become_fields_with_well_and_site(tmp_path):
    planes = _cell_painting_plate(tmp_path / "src" / "plate1")
    names = {"1": "DNA", "2": "ER", "3": "RNA", "4": "AGP", "5": "Mito"}
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), dest=str(tmp_path / "s"), tile_size=32,
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


def test_channel_files_need_a_pattern_and_missing_channels_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"channel-files needs channel_pattern.*\(\?P<channel>"):
        IngestConfig(layout="channel-files")
    _cell_painting_plate(tmp_path / "src", wells=("r01c01",), sites=(1,))
    (tmp_path / "src" / "r01c01f01p01-ch3sk1fk1fl1.tiff").unlink()
    with pytest.raises(IngestError, match=r"r01c01f01p01-ch\*sk1fk1fl1.tiff: channel file\(s\) \['3'\] not found"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), dest=str(tmp_path / "s"), tile_size=32,
                                   layout="channel-files", channel_pattern=JUMP, channels=["1", "2", "3"]))
    with pytest.raises(IngestError, match="foreground_channel 'DAPI' is not one of its channels"):
        ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), dest=str(tmp_path / "s2"), tile_size=32,
                                   layout="channel-files", channel_pattern=JUMP, foreground_channel="DAPI"))


def test_cli_channel_names_from_pairs_or_csv(tmp_path):
    from sslray.cli import _channel_names

    assert _channel_names("1=DNA,2=ER") == {"1": "DNA", "2": "ER"}
    (tmp_path / "names.csv").write_text("key,name\nch1,DAPI\n")
    assert _channel_names(str(tmp_path / "names.csv")) == {"ch1": "DAPI"}
    with pytest.raises(ValueError, match="KEY=NAME"):
        _channel_names("1=DNA,2")


def test_channel_files_take_labels_from_a_csv_keyed_by_field(tmp_path):
    _cell_painting_plate(tmp_path / "src" / "plate1")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,perturbation\nplate1/r01c01f01p01-ch*sk1fk1fl1.tiff,ctrl,DMSO\n"
                      "plate1/r01c02f01p01-ch*sk1fk1fl1.tiff,treated,cmpd7\nplate1/r09c09f01p01-ch*.tiff,x,y\n")
    store = ingest_folder(IngestConfig(workers=0, src=str(tmp_path / "src"), dest=str(tmp_path / "s"), tile_size=32,
                                       layout="channel-files", channel_pattern=JUMP, labels=str(labels),
                                       on_error="skip"))
    m = store.manifest
    assert m.groupby("well")["perturbation"].first().to_dict() == {"r01c01": "DMSO", "r01c02": "cmpd7"}
    report = json.loads((tmp_path / "s" / "ingest_report.json").read_text())
    assert "r09c09" in report["skipped"][0]["path"] and "fields are named like" in report["skipped"][0]["reason"]
