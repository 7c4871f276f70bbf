"""The tile store on object storage: a real S3-compatible server (moto) on loopback."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from sslray.data.ingest import IngestConfig, ingest_folder
from sslray.data.integrity import verify_store
from sslray.data.store import StoreError, TileStore

BUCKET = "sslray-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for _ in range(100):
            try:
                boto3.client("s3").create_bucket(Bucket=BUCKET)
                break
            except Exception:
                time.sleep(0.1)
        else:
            pytest.fail("moto server did not start")
        yield f"s3://{BUCKET}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_ingest_to_s3_and_read_back(s3_server, synthetic_images):
    import s3fs

    root, labels = synthetic_images
    url = f"{s3_server}/stores/cells"
    store = ingest_folder(IngestConfig(workers=0, src=str(root), dest=url, labels=str(labels), tile_size=64))
    local = ingest_folder(IngestConfig(workers=0, src=str(root), dest=str(root.parent / "local-copy"), labels=str(labels),
                                       tile_size=64))
    reopened = TileStore.open(url)
    assert len(reopened) == len(local) == 96
    np.testing.assert_array_equal(reopened.read(0, 96), local.read(0, 96))
    assert reopened.manifest["label"].tolist() == local.manifest["label"].tolist()
    fs = s3fs.S3FileSystem()
    assert fs.exists(f"{BUCKET}/stores/cells/_SUCCESS")
    assert verify_store(url) == []  # shard checksums hold on object storage too
    # a store whose marker is missing (an interrupted remote ingest) is refused
    fs.rm(f"{BUCKET}/stores/cells/_SUCCESS")
    with pytest.raises(StoreError, match="incomplete"):
        TileStore.open(url)
    assert store.url == url


def test_interrupted_ingest_to_s3_stays_invisible_and_resumes(s3_server, tmp_path, monkeypatch):
    from sslray.data import ingest as ingest_module
    from tests.conftest import write_png

    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        write_png(tmp_path / "src" / f"{name}.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "src" / "d.png").write_bytes(b"cut off")
    cfg = IngestConfig(workers=0, src=str(tmp_path / "src"), dest=f"{s3_server}/stores/resume", tile_size=32)
    with pytest.raises(ingest_module.IngestError, match="d.png"):
        ingest_folder(cfg)
    with pytest.raises(StoreError, match="incomplete"):
        TileStore.open(cfg.dest)
    write_png(tmp_path / "src" / "d.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    tiled = []
    real = ingest_module.tile_source
    monkeypatch.setattr(ingest_module, "tile_source", lambda s, *rest: tiled.append(s.rel) or real(s, *rest))
    store = ingest_folder(cfg)
    assert tiled == ["d.png"] and len(store) == 16 and verify_store(cfg.dest) == []
