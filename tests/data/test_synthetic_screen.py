"""The synthetic Cell Painting screen: deterministic, JUMP-named, a sound design, morphology not brightness."""

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sslray.config import read_yaml
from sslray.data.synthetic_screen import (
    CHANNELS,
    CONTROL,
    MOAS,
    PLATEMAP_COLUMNS,
    ScreenSpec,
    jump_name,
    plate_map,
    write_screen,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = ScreenSpec(plates_per_batch=1, n_moas=2, compounds_per_moa=1, control_wells=1, sites=1, size=32, cells=4)


@pytest.fixture(scope="module")
def screen(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    """The default screen (4 plates, 48 wells, 2 sites each), written once."""
    root = tmp_path_factory.mktemp("screen")
    with open(write_screen(root)) as handle:
        return root, list(csv.DictReader(handle))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_seed_writes_byte_identical_files_and_another_seed_others(tmp_path):
    write_screen(tmp_path / "a", TINY)
    write_screen(tmp_path / "b", TINY)
    write_screen(tmp_path / "c", ScreenSpec(**{**TINY.__dict__, "seed": 1}))
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 2 * 3 * 5 + 1  # 2 plates x 3 wells x 5 channels + platemap.csv
    tiffs = [name for name in a if name.endswith(".tiff")]
    assert all(a[name] != c[name] for name in tiffs if name in c)


def test_files_follow_jumps_naming_with_the_ingest_configs_channel_numbers(tmp_path):
    write_screen(tmp_path, TINY)
    ingest = read_yaml(ROOT / "configs" / "ingest" / "cell_painting.yaml")
    numbers = {name: key for key, name in ingest["channel_names"].items()}
    assert set(numbers) == set(CHANNELS)
    pattern = re.compile(ingest["channel_pattern"])
    with open(tmp_path / "platemap.csv") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for channel in CHANNELS:
            path = tmp_path / row["plate"] / jump_name(row["well"], 1, channel)
            match = pattern.search(path.name)
            assert match and match["well"] == row["well"] and match["channel"] == numbers[channel]
            assert re.fullmatch(r"r\d\dc\d\df01p01-ch\dsk1fk1fl1\.tiff", path.name)
            pixels = tifffile.imread(path)
            assert pixels.dtype == np.uint16 and pixels.shape == (32, 32) and pixels.max() > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted({r["plate"] for r in rows})


def test_the_plate_map_puts_every_compound_in_both_batches_and_controls_on_every_plate(screen):
    _, rows = screen
    assert tuple(rows[0]) == PLATEMAP_COLUMNS
    plates = {r["plate"]: r["batch"] for r in rows}
    assert len(plates) == 4 and Counter(plates.values()) == {"batch1": 2, "batch2": 2}
    assert len({(r["plate"], r["well"]) for r in rows}) == len(rows)  # no well twice
    for plate in plates:
        on_plate = [r for r in rows if r["plate"] == plate]
        assert sum(r["control"] == "True" for r in on_plate) == 4
        assert all((r["control"] == "True") == (r["perturbation"] == CONTROL == r["moa"]) for r in on_plate)
    treated = [r for r in rows if r["control"] == "False"]
    moa_of = {r["perturbation"]: r["moa"] for r in treated}
    assert len(moa_of) == 8 and Counter(moa_of.values()) == {m: 2 for m in MOAS}
    assert all({r["moa"] for r in treated if r["perturbation"] == c} == {moa_of[c]} for c in moa_of)
    for compound in moa_of:
        wells = [r for r in treated if r["perturbation"] == compound]
        assert len(wells) == 4 and {r["batch"] for r in wells} == {"batch1", "batch2"}


def test_a_plate_too_small_for_the_design_is_refused():
    with pytest.raises(ValueError, match="do not fit on plate B1P01"):
        plate_map(ScreenSpec(control_wells=400))
    with pytest.raises(ValueError, match="at least 2 batches"):
        ScreenSpec(batches=1)


def _site(root: Path, row: dict[str, str], site: int) -> np.ndarray:
    planes = [tifffile.imread(root / row["plate"] / jump_name(row["well"], site, c)) for c in CHANNELS]
    return np.stack(planes).astype(np.float32) / 65535


def _channel_means(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=(1, 2))


def _intensity_shape(image: np.ndarray) -> np.ndarray:
    """Gain- and offset-free shape of each channel's histogram: log ratios of background-subtracted quantiles."""
    q = np.percentile(image, [10, 50, 75, 90, 95, 99, 99.9], axis=(1, 2)) - np.percentile(image, 10, axis=(1, 2))
    q = q[1:] + 1e-6
    return np.log(q[1:] / q[:-1]).T.ravel()


def _moa_nsb_accuracy(features: np.ndarray, rows: list[dict[str, str]]) -> float:
    """1-NN MoA accuracy of treated wells among the treated wells of the *other* batch."""
    z = (features - features.mean(0)) / features.std(0)
    treated = [i for i, r in enumerate(rows) if r["control"] == "False"]
    hits = []
    for i in treated:
        others = [j for j in treated if rows[j]["batch"] != rows[i]["batch"]]
        nearest = others[int(np.argmin([np.linalg.norm(z[i] - z[j]) for j in others]))]
        hits.append(rows[nearest]["moa"] == rows[i]["moa"])
    return float(np.mean(hits))


def test_morphology_separates_moas_across_batches_while_channel_means_do_not(screen):
    root, rows = screen
    sites = [[_site(root, r, s) for s in (1, 2)] for r in rows]
    means = np.array([np.mean([_channel_means(s) for s in w], axis=0) for w in sites])
    shape = np.array([np.mean([_intensity_shape(s) for s in w], axis=0) for w in sites])
    by_means, by_shape = _moa_nsb_accuracy(means, rows), _moa_nsb_accuracy(shape, rows)
    assert by_means <= 0.4  # chance is 0.25 (4 MoAs)
    assert by_shape >= 0.5 and by_shape >= by_means + 0.25
