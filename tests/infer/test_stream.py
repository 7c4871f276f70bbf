"""The real Ray Data pipeline: store shards and slides through actors, and a SIGKILLed job resumed.

Kept few and small (2 cores): one store run, one run straight from images with a broken file,
and one ``sslray embed`` process killed with SIGKILL mid-run and rerun.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sslray import storage
from sslray.data.ingest_config import IngestConfig
from sslray.data.synthetic import SyntheticSpec, write_dataset
from sslray.infer.embed import EmbedConfig, run_embed
from sslray.infer.partitions import EMBED_DIR

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


def _vectors(table) -> np.ndarray:
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def test_a_store_streams_through_the_actor_pool_into_one_row_per_tile(ray_session, tiny_store, checkpoint, tmp_path):
    out = run_embed(EmbedConfig(checkpoint=checkpoint, store=tiny_store.url, out=str(tmp_path / "emb"),
                                batch_size=16, run_dir=str(tmp_path), progress_every_s=3600))
    table = pq.read_table(out)
    assert table.column("tile_id").to_pylist() == list(range(len(tiny_store)))
    assert np.allclose(np.linalg.norm(_vectors(table), axis=1), 1, atol=1e-4)


def test_images_embed_straight_from_files_and_a_broken_one_is_skipped_by_name(ray_session, synthetic_images,
                                                                              checkpoint, tiny_store, tmp_path):
    root, labels = synthetic_images
    copy = tmp_path / "images"
    shutil.copytree(root, copy)
    (copy / "spindle" / "spindle_003.tif").write_bytes(b"\x00" * 10)
    tiling = IngestConfig(tile_size=64, labels=str(labels), channels=["DNA", "cytoplasm"])
    out = run_embed(EmbedConfig(checkpoint=checkpoint, slides=str(copy), tiling=tiling, out=str(tmp_path / "emb"),
                                batch_size=16, on_error="skip", run_dir=str(tmp_path), progress_every_s=3600))
    table = pq.read_table(out)
    info = storage.read_json(f"{out}/_SUCCESS")
    assert [Path(s["source"]).name for s in info["skipped"]] == ["spindle_003.tif"]
    assert table.num_rows == len(tiny_store) - 4 and "spindle_003" not in table.column("image_id").to_pylist()


def _command(checkpoint: str, images: Path, labels: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sslray.cli", "embed", "--checkpoint", checkpoint, "--slides", str(images),
            "--labels", str(labels), "--tile-size", "64", "--out", str(out), "batch_size=4", "run_dir=" + str(out.parent),
            'tiling.channels=["DNA","cytoplasm"]', "progress_every_s=3600"]


def _kill_when_committed(process: subprocess.Popen, done: Path, at_least: int, timeout_s: float = 240) -> int:
    """SIGKILL the job as soon as ``at_least`` partitions are committed; returns how many were."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if done.is_dir() and len(list(done.glob("*.json"))) >= at_least:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return len(list(done.glob("*.json")))
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"the job ended (rc {process.poll()}) before {at_least} partitions were committed")


def test_a_job_killed_with_sigkill_resumes_and_finishes_exactly_once(ray_session, checkpoint, tmp_path):
    images = tmp_path / "images"
    labels = write_dataset(images, SyntheticSpec(images_per_class=15))  # 60 fields, 4 tiles each
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    whole = tmp_path / "whole"
    first = subprocess.run(_command(checkpoint, images, labels, whole), env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "emb"
    job = subprocess.Popen(_command(checkpoint, images, labels, out), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    staging = tmp_path / ".emb.partial"
    committed = _kill_when_committed(job, staging / EMBED_DIR / "done", at_least=3)
    assert not out.exists() and committed < 60
    before = {p.name: p.stat().st_ino for p in staging.glob("part-*.parquet")}
    rerun = subprocess.run(_command(checkpoint, images, labels, out), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = {p.name: p.stat().st_ino for p in out.glob("part-*.parquet")}
    assert all(after[name] == inode for name, inode in before.items())  # committed partitions were not redone
    table, reference = pq.read_table(out), pq.read_table(whole)
    assert table.num_rows == reference.num_rows == 240
    keys = list(zip(table.column("image_id").to_pylist(), table.column("x").to_pylist(), table.column("y").to_pylist()))
    assert len(set(keys)) == len(keys)  # one row per tile
    rows = table.drop_columns(["embedding"]).to_pandas()
    assert rows.equals(reference.drop_columns(["embedding"]).to_pandas())  # (pandas: missing mpp equals missing)
    np.testing.assert_allclose(_vectors(table), _vectors(reference), atol=1e-5)


@pytest.mark.realdata
def test_the_cmu_slide_embeds_straight_from_the_file_and_a_slide_that_does_not_open_is_named(
        ray_session, test_data, rgb_checkpoint, tmp_path):
    from sslray.data.sources import SourceImage
    from sslray.data.tiling import source_tiles

    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(test_data / "wsi" / "CMU-1-Small-Region.svs", slides)
    (slides / "broken.svs").write_bytes(b"II*\x00" + b"\x00" * 64)  # a TIFF header and nothing else
    tiling = IngestConfig(tile_size=224, mpp=0.5, min_tissue=0.25)
    cfg = EmbedConfig(checkpoint=rgb_checkpoint, slides=str(slides), tiling=tiling, out=str(tmp_path / "emb"),
                      batch_size=32, run_dir=str(tmp_path), progress_every_s=3600)
    with pytest.raises(ValueError, match=r"(?s)1 of 2 input\(s\).*broken.svs"):
        run_embed(cfg)
    out = run_embed(replace(cfg, on_error="skip"))  # the CMU partition was kept: only broken.svs is retried
    table = pq.read_table(out)
    cmu = SourceImage(slides / "CMU-1-Small-Region.svs", "CMU-1-Small-Region.svs")
    expected = sum(len(rows) for _, rows, _ in source_tiles(cmu, tiling, tiling.scaling))  # what ingest would store
    assert table.num_rows == expected > 20 and set(table.column("slide_id").to_pylist()) == {"CMU-1-Small-Region"}
    assert np.allclose(table.column("mpp").to_numpy(), 0.5, atol=0.01) and _vectors(table).shape[1] == 32
    info = storage.read_json(f"{out}/_SUCCESS")
    assert [Path(s["source"]).name for s in info["skipped"]] == ["broken.svs"]
