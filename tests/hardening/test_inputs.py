"""Bad ingest input is refused with a message naming the file, line or option; nothing is read from outside SRC."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sslray.cli import main
from sslray.data.ingest import IngestConfig, IngestError, ingest_folder
from sslray.data.readers import ImageReadError, read_image
from tests.conftest import write_png


@pytest.fixture
def src(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "src" / name, rng.integers(0, 255, (64, 64), dtype=np.uint8))
    write_png(tmp_path / "outside" / "secret.png", np.full((64, 64), 7, dtype=np.uint8))
    return tmp_path / "src"


def ingest(src, labels_text: str | None = None, **kwargs):
    labels = None
    if labels_text is not None:
        labels = src.parent / "labels.csv"
        labels.write_bytes(labels_text.encode() if isinstance(labels_text, str) else labels_text)
    cfg = {"src": str(src), "out": str(src.parent / "store"), "tile_size": 32, "workers": 0,
           "labels": str(labels) if labels else None, **kwargs}
    return ingest_folder(IngestConfig(**cfg))


@pytest.mark.parametrize("row", ["../outside/secret.png", "a/../../outside/secret.png", "{outside}/secret.png"])
def test_labels_paths_outside_src_are_refused(src, row):
    row = row.format(outside=src.parent / "outside")
    with pytest.raises(IngestError, match=r"line 3: path .*secret.png.* is outside the source folder"):
        ingest(src, f"path,label\na.png,x\n{row},y\n")
    assert not (src.parent / "store").exists()


def test_a_path_listed_twice_is_an_error_naming_both_lines(src):
    with pytest.raises(IngestError, match=r"'a.png' is listed twice, on lines 2 and 4"):
        ingest(src, "path,label\na.png,x\nb.png,y\n./a.png,x\n")
    with pytest.raises(IngestError, match=r"'a.png' is listed twice with two labels \('x' and 'z'\), on lines 2 and 3"):
        ingest(src, "path,label\na.png,x\na.png,z\n")


def test_latin1_and_header_only_labels_files_are_named(src):
    with pytest.raises(IngestError, match=r"labels.csv is not UTF-8 text .*save it as UTF-8"):
        ingest(src, "path,label\na.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(IngestError, match=r"labels.csv lists no images: it has a header \(path,label\) but no rows"):
        ingest(src, "path,label\n")


def test_utf8_with_byte_order_mark_is_read(src):
    store = ingest(src, "\ufeffpath,label\na.png,caf\u00e9\nb.png,tea\n")
    assert sorted(set(store.manifest["label"])) == ["caf\u00e9", "tea"]


def test_a_symlink_leaving_src_is_followed_with_a_warning_and_reported(src, caplog):
    (src / "linked.png").symlink_to(src.parent / "outside" / "secret.png")
    store = ingest(src)
    assert "linked" in set(store.manifest["image_id"])
    assert "points outside" in caplog.text and "linked.png" in caplog.text
    report = json.loads((src.parent / "store" / "ingest_report.json").read_text())
    assert report["linked_outside"] == ["linked.png"]


def write_bomb(path, side: int = 20480) -> None:
    """A deflate TIFF of ``side``^2 zero pixels: a few hundred KiB on disk, side^2 bytes decoded."""
    import tifffile

    tile = np.zeros((512, 512), np.uint8)
    tiles = (tile for _ in range((side // 512) ** 2))
    tifffile.imwrite(path, data=tiles, shape=(side, side), dtype=np.uint8, tile=(512, 512), compression="zlib")


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.tif"
    write_bomb(bomb)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(ImageReadError, match=r"bomb.tif: image of 20480 x 20480 = 419,430,400 pixels is over the limit"):
        read_image(bomb)


def test_the_pixel_limit_is_configurable_and_names_the_file(src, capsys):
    with pytest.raises(IngestError, match=r"a.png: image of 64 x 64 = 4,096 pixels is over the limit of 1,000"):
        ingest(src, max_pixels=1000)
    code = main(["ingest", str(src), str(src.parent / "s2"), "--tile-size", "32", "--workers", "0",
                 "--max-pixels", "1000", "--on-error", "skip"])
    assert code == 2 and "every image was skipped" in capsys.readouterr().err
    assert len(ingest(src, max_pixels=4096)) == 8


@pytest.mark.parametrize(("args", "expected"), [
    (["--workers", "-1"], "workers must be 0 (in this process, no Ray) or a positive number"),
    (["--float-max", "abc"], "--float-max 'abc': expected a number or comma-separated numbers"),
    (["--clip-percentiles", "1,x"], "--clip-percentiles '1,x': expected a number"),
])
def test_bad_ingest_options_name_the_option(src, capsys, args, expected):
    code = main(["ingest", str(src), str(src.parent / "store"), *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err
    assert len(err.strip().splitlines()) == 1
