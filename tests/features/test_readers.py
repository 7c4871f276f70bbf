"""The three layouts of other tools' features, each read back slide by slide, and every bad input
refused with the file named. The writers here build tiny fixtures in tmp_path (also used by
tests/features/test_run.py and tests/cli/test_features.py)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from sslray.features.readers import Source, check_features, detect_format, feature_files, read_slides


def features(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    """Un-normalised features (norms far from 1), as extractors write them."""
    return (np.random.default_rng(seed).normal(size=(n, d)) * 3 + 1).astype(np.float32)


def write_histossl(root: Path, slides: dict[str, int], d: int = 6, flat: bool = False) -> dict[str, np.ndarray]:
    """HistoSSLscaling layout: ``root/<slide>/features.npy`` (or ``root/<slide>.npy``), columns level, x, y, features."""
    arrays = {}
    for k, (slide, n) in enumerate(slides.items()):
        coords = np.column_stack([np.full(n, 16.0), np.arange(n) * 224.0, np.full(n, 448.0 * k)])
        arrays[slide] = np.column_stack([coords, features(n, d, k)])
        path = root / f"{slide}.npy" if flat else root / slide / "features.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, arrays[slide])
    return arrays


def write_h5(path: Path, n: int, d: int = 6, seed: int = 0, batch_axis: bool = False, level: int | None = 0,
             coords: bool = True) -> np.ndarray:
    """A CLAM / TRIDENT file: ``features`` (N, d) (or (1, N, d)), ``coords`` (N, 2) with ``patch_level``."""
    feats = features(n, d, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["features"] = feats[None] if batch_axis else feats
        if coords:
            h5["coords"] = np.column_stack([np.arange(n) * 256, np.arange(n) * 512]).astype(np.int32)
            if level is not None:
                h5["coords"].attrs["patch_level"] = level
    return feats


def _slides(root: Path, fmt: str = "auto", **kwargs) -> list:
    src = Source.open(str(root))
    fmt = detect_format(src) if fmt == "auto" else fmt
    return list(read_slides(src, fmt, feature_files(src, fmt), **kwargs))


def test_histossl_slides_come_with_level_x_y_and_their_folder_or_file_names(tmp_path):
    arrays = write_histossl(tmp_path, {"TCGA-A": 4, "TCGA-B": 2})
    write_histossl(tmp_path, {"TCGA-C": 3}, flat=True)
    assert detect_format(Source.open(str(tmp_path))) == "histossl"
    slides = {s.slide_id: s for s in _slides(tmp_path)}
    assert sorted(slides) == ["TCGA-A", "TCGA-B", "TCGA-C"]
    a = slides["TCGA-A"]
    np.testing.assert_array_equal(a.features, arrays["TCGA-A"][:, 3:].astype(np.float32))
    np.testing.assert_array_equal(a.coords["x"], arrays["TCGA-A"][:, 1])
    np.testing.assert_array_equal(a.coords["level"], np.full(4, 16.0))
    assert a.source == "TCGA-A/features.npy" and slides["TCGA-C"].source == "TCGA-C.npy"
    assert a.path.endswith("TCGA-A/features.npy")


@pytest.mark.parametrize("shape", [(5, 3), (5,), (2, 3, 4)])
def test_an_npy_that_is_not_level_x_y_plus_features_is_refused_naming_it(tmp_path, shape):
    write_histossl(tmp_path, {"good": 2})
    (tmp_path / "bad").mkdir()
    np.save(tmp_path / "bad" / "features.npy", np.zeros(shape))
    with pytest.raises(ValueError, match=r"bad/features.npy: expected a \(N, 3 \+ d\) array"):
        _slides(tmp_path)


def test_an_unreadable_npy_is_refused_naming_it(tmp_path):
    (tmp_path / "broken.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="broken.npy: not a readable .npy"):
        _slides(tmp_path)


def test_nan_or_inf_features_are_refused_naming_the_file_and_the_row_count(tmp_path):
    arrays = write_histossl(tmp_path, {"s1": 5})
    arrays["s1"][1, 4] = np.nan
    arrays["s1"][3, 3] = np.inf
    np.save(tmp_path / "s1" / "features.npy", arrays["s1"])
    with pytest.raises(ValueError, match=r"s1/features.npy: 2 of 5 rows hold NaN or inf features \(first at row 1\)"):
        _slides(tmp_path)


def test_h5_features_coords_and_patch_level_are_read_and_a_batch_axis_squeezed(tmp_path):
    a = write_h5(tmp_path / "h5_files" / "slide_a.h5", 4, seed=1, level=1)
    b = write_h5(tmp_path / "h5_files" / "slide_b.h5", 3, seed=2, batch_axis=True, level=None)
    (tmp_path / "pt_files").mkdir()  # CLAM writes .pt files beside the h5 folder; they are not read
    assert detect_format(Source.open(str(tmp_path))) == "h5"
    slides = {s.slide_id: s for s in _slides(tmp_path)}
    np.testing.assert_array_equal(slides["slide_a"].features, a)
    np.testing.assert_array_equal(slides["slide_b"].features, b)
    np.testing.assert_array_equal(slides["slide_a"].coords["y"], np.arange(4) * 512)
    np.testing.assert_array_equal(slides["slide_a"].coords["level"], [1, 1, 1, 1])
    assert "level" not in slides["slide_b"].coords and slides["slide_a"].source == "h5_files/slide_a.h5"


def test_an_h5_without_features_is_refused_naming_it_and_what_it_holds(tmp_path):
    write_h5(tmp_path / "ok.h5", 2)
    with h5py.File(tmp_path / "no_features.h5", "w") as h5:
        h5["coords"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="no_features.h5: no 'features' dataset .it holds: coords"):
        _slides(tmp_path)


def test_h5_coords_that_do_not_match_the_features_are_refused_naming_the_file(tmp_path):
    with h5py.File(tmp_path / "odd.h5", "w") as h5:
        h5["features"] = np.zeros((3, 4))
        h5["coords"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"odd.h5: 'coords' has shape \(2, 2\) but 'features' has 3 rows"):
        _slides(tmp_path)


def test_h5_files_of_several_extractors_are_refused_asking_for_one_folder(tmp_path):
    write_h5(tmp_path / "features_uni_v1" / "s1.h5", 2)
    write_h5(tmp_path / "features_conch_v1" / "s1.h5", 2)
    with pytest.raises(ValueError, match="several folders .features_conch_v1, features_uni_v1"):
        detect_format(Source.open(str(tmp_path)))
    assert [s.slide_id for s in _slides(tmp_path / "features_uni_v1")] == ["s1"]


def test_a_table_is_split_into_its_slides_in_file_order_without_its_id_columns(tmp_path):
    frame = pd.DataFrame({"slide_id": ["z", "z", "a", "z"], "x": [0, 1, 2, 3], "y": [5, 6, 7, 8],
                          "label": [1, 1, 0, 1], "f0": [0.5, 1.5, 2.5, 3.5], "f1": [9.0, 8.0, 7.0, 6.0]})
    frame.to_parquet(tmp_path / "features.parquet")
    slides = _slides(tmp_path)
    assert [s.slide_id for s in slides] == ["z", "a"]
    np.testing.assert_array_equal(slides[0].features, [[0.5, 9.0], [1.5, 8.0], [3.5, 6.0]])
    np.testing.assert_array_equal(slides[0].coords["x"], [0, 1, 3])
    np.testing.assert_array_equal(slides[1].coords["y"], [7])


def test_a_folder_of_csvs_without_an_id_column_is_one_slide_per_file_and_the_prefix_picks_features(tmp_path):
    for k, slide in enumerate(["001", "002"]):
        pd.DataFrame({"feat_0": [1.0 + k, 2.0], "feat_1": [3.0, 4.0], "area": [10, 11]}).to_csv(
            tmp_path / f"{slide}.csv", index=False)
    slides = _slides(tmp_path, feature_prefix="feat_")
    assert [s.slide_id for s in slides] == ["001", "002"]
    np.testing.assert_array_equal(slides[1].features, [[2.0, 3.0], [2.0, 4.0]])
    assert _slides(tmp_path)[0].features.shape == (2, 3)  # without a prefix every numeric column counts


def test_a_csv_slide_id_stays_text_and_a_saved_index_is_not_a_feature(tmp_path):
    pd.DataFrame({"slide_id": ["007", "007"], "f": [1.0, 2.0]}).to_csv(tmp_path / "t.csv")  # index column kept
    (slide,) = _slides(tmp_path, fmt="table")
    assert slide.slide_id == "007" and slide.features.shape == (2, 1)


def test_a_table_without_feature_columns_or_with_text_features_is_refused_naming_it(tmp_path):
    pd.DataFrame({"slide_id": ["a"], "x": [1], "note": ["n"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="t.csv: no feature columns"):
        _slides(tmp_path)
    with pytest.raises(ValueError, match=r"t.csv: feature column\(s\) \['note'\] are not numeric"):
        _slides(tmp_path, feature_prefix="no")


def test_an_empty_or_missing_src_and_mixed_layouts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no feature files in {tmp_path}"):
        detect_format(Source.open(str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Source.open(str(tmp_path / "nowhere"))
    write_histossl(tmp_path, {"s": 1})
    write_h5(tmp_path / "s.h5", 1)
    with pytest.raises(ValueError, match="several layouts .histossl, h5.; choose one with format="):
        detect_format(Source.open(str(tmp_path)))
    assert [s.slide_id for s in _slides(tmp_path, fmt="h5")] == ["s"]


def test_one_file_can_be_src(tmp_path):
    write_h5(tmp_path / "only.h5", 3)
    src = Source.open(str(tmp_path / "only.h5"))
    assert detect_format(src) == "h5" and feature_files(src, "table") == []
    (slide,) = _slides(tmp_path / "only.h5")
    assert slide.slide_id == "only" and slide.source == "only.h5" and slide.path == str(tmp_path / "only.h5")


def test_integer_features_become_float32_and_text_ones_are_refused():
    assert check_features(np.arange(6).reshape(3, 2), "f").dtype == np.float32
    with pytest.raises(ValueError, match="f: features are <U1"):
        check_features(np.array([["a"]]), "f")
