"""Ingest resumes after a failure or a kill, and runs in parallel on Ray with the same result."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sslray.data import ingest as ingest_module
from sslray.data.ingest import IngestConfig, IngestError, ingest_folder
from tests.conftest import ROOT, write_png


def _images(src, n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_png(src / f"class{i % 2}" / f"img{i:02d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return src


def _assert_same_store(a, b):
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.read(0, len(a)), b.read(0, len(b)))
    assert a.manifest.equals(b.manifest)
    assert a.info == b.info


def _count_tiling(monkeypatch) -> list[str]:
    tiled = []
    real = ingest_module.tile_source

    def counting(source, *rest):
        tiled.append(source.rel)
        return real(source, *rest)

    monkeypatch.setattr(ingest_module, "tile_source", counting)
    return tiled


def test_failed_ingest_keeps_finished_sources_and_the_rerun_tiles_only_the_rest(tmp_path, monkeypatch):
    src = _images(tmp_path / "src", 4)
    (src / "class1" / "img03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32)
    with pytest.raises(IngestError, match=r"img03.png.*the 3 source\(s\) tiled so far are kept"):
        ingest_folder(cfg)
    assert not (tmp_path / "s").exists()  # nothing visible to readers
    _images(tmp_path / "src", 4)  # the user fixes the file
    tiled = _count_tiling(monkeypatch)
    resumed = ingest_folder(cfg)
    assert tiled == ["class1/img03.png"]
    assert not (tmp_path / ".s.partial").exists()
    assert not any(p.name == "_ingest" for p in (tmp_path / "s").iterdir())
    fresh = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "fresh"), tile_size=32))
    _assert_same_store(resumed, fresh)


def test_rerun_with_other_settings_is_refused_until_overwrite(tmp_path):
    src = _images(tmp_path / "src", 2)
    (src / "class0" / "zz.png").write_bytes(b"not a png")
    with pytest.raises(IngestError):
        ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32))
    with pytest.raises(IngestError, match="interrupted ingest with different tile_size.*--overwrite"):
        ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=16))
    store = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=16,
                                       overwrite=True, on_error="skip"))
    assert store.info.tile_size == 16 and len(store) == 2 * 16


_KILLABLE = """
import sys
from sslray.data.ingest import IngestConfig, ingest_folder
ingest_folder(IngestConfig(workers=0, src=sys.argv[1], out=sys.argv[2], tile_size=256))
"""


def test_ingest_killed_mid_run_resumes_without_losing_or_duplicating_tiles(tmp_path, monkeypatch):
    n = 12
    src = _images(tmp_path / "src", n, size=1536)
    dest = tmp_path / "s"
    parts = tmp_path / ".s.partial" / "_ingest" / "parts"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(src), str(dest)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(parts.glob("*/part.json"))) < 2:
            assert proc.poll() is None, "the ingest ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = len(list(parts.glob("*/part.json")))
    assert 2 <= finished < n and not dest.exists()
    tiled = _count_tiling(monkeypatch)
    resumed = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(dest), tile_size=256))
    assert len(tiled) == n - finished  # finished sources are not read again
    fresh = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "fresh"), tile_size=256))
    _assert_same_store(resumed, fresh)


def test_parallel_ray_ingest_equals_the_in_process_one(ray_session, tmp_path):
    src = _images(tmp_path / "src", 5)
    (src / "class0" / "broken.png").write_bytes(b"garbage")
    parallel = ingest_folder(IngestConfig(src=str(src), out=str(tmp_path / "p"), tile_size=32, on_error="skip"))
    serial = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32,
                                        on_error="skip"))
    _assert_same_store(parallel, serial)
    report = (tmp_path / "p" / "ingest_report.json").read_text()
    assert "broken.png" in report


def test_a_part_damaged_after_it_finished_is_redone_not_trusted(tmp_path, monkeypatch):
    src = _images(tmp_path / "src", 3)
    (src / "class0" / "zz.png").write_bytes(b"broken")
    cfg = IngestConfig(workers=0, src=str(src), out=str(tmp_path / "s"), tile_size=32)
    with pytest.raises(IngestError):
        ingest_folder(cfg)
    write_png(src / "class0" / "zz.png", np.zeros((64, 64, 3), np.uint8))  # the user fixes the file
    piece = sorted((tmp_path / ".s.partial" / "_ingest" / "parts").glob("*/00000.blosc"))[0]
    piece.write_bytes(piece.read_bytes()[:100])  # what a power cut could leave behind
    tiled = _count_tiling(monkeypatch)
    store = ingest_folder(cfg)
    # class0/img00 and img02 had finished before zz.png stopped the run; one of them is damaged now
    assert sorted(tiled)[-2:] == ["class0/zz.png", "class1/img01.png"] and len(tiled) == 3
    fresh = ingest_folder(IngestConfig(workers=0, src=str(src), out=str(tmp_path / "fresh"), tile_size=32))
    _assert_same_store(store, fresh)
