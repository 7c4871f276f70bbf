"""The tile store on object storage: a real S3-compatible server (moto) on loopback."""

import numpy as np
import pytest

from sslray.data.ingest import IngestConfig, ingest_folder
from sslray.data.integrity import verify_store
from sslray.data.store import StoreError, TileStore

from tests.conftest import BUCKET


def test_ingest_to_s3_and_read_back(s3_server, synthetic_images):
    import s3fs

    root, labels = synthetic_images
    url = f"{s3_server}/stores/cells"
    store = ingest_folder(IngestConfig(workers=0, src=str(root), out=url, labels=str(labels), tile_size=64))
    local = ingest_folder(IngestConfig(workers=0, src=str(root), out=str(root.parent / "local-copy"), labels=str(labels),
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
    cfg = IngestConfig(workers=0, src=str(tmp_path / "src"), out=f"{s3_server}/stores/resume", tile_size=32)
    with pytest.raises(ingest_module.IngestError, match="d.png"):
        ingest_folder(cfg)
    with pytest.raises(StoreError, match="incomplete"):
        TileStore.open(cfg.out)
    write_png(tmp_path / "src" / "d.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    tiled = []
    real = ingest_module.tile_source
    monkeypatch.setattr(ingest_module, "tile_source", lambda s, *rest: tiled.append(s.rel) or real(s, *rest))
    store = ingest_folder(cfg)
    assert tiled == ["d.png"] and len(store) == 16 and verify_store(cfg.out) == []


def _link(tmp_path, *targets):
    src = tmp_path / "src"
    src.mkdir()
    for target in targets:
        (src / target.name).symlink_to(target)
    return src


REAL_SAMPLES = {  # every reader, on the real samples, with the settings a user would pass
    "slide": (lambda d, t: _link(t, d / "wsi" / "CMU-1-Small-Region.svs"), {"tile_size": 224, "mpp": 1.0}),
    "marker-folders": (lambda d, t: d / "mibi_simpleseg",
                       {"tile_size": 512, "layout": "channel-folders", "channels": ["HH3", "CD45", "PanKRT"]}),
    "imc-floats": (lambda d, t: _link(t, *sorted((d / "imc_cytomapper").glob("*_imc.tiff"))),
                   {"tile_size": 50, "log1p": True, "float_max": [6.0]}),
    "qptiff": (lambda d, t: _link(t, d / "multiplex" / "small_vectra.qptiff"), {"tile_size": 480}),
    "tile-folders": (lambda d, t: d / "crc_samples" / "kather2016", {"tile_size": 150}),
}


@pytest.mark.parametrize("kind", sorted(REAL_SAMPLES))
def test_real_samples_ingest_to_s3_exactly_as_to_local_disk(s3_server, test_data, tmp_path, kind):
    make_src, settings = REAL_SAMPLES[kind]
    if kind == "slide":
        pytest.importorskip("tiffslide")
    src = str(make_src(test_data, tmp_path))
    remote = ingest_folder(IngestConfig(workers=0, src=src, out=f"{s3_server}/real/{kind}", **settings))
    local = ingest_folder(IngestConfig(workers=0, src=src, out=str(tmp_path / "local"), **settings))
    assert len(remote) == len(local) > 0 and remote.info == local.info
    np.testing.assert_array_equal(TileStore.open(remote.url).read(0, len(remote)), local.read(0, len(local)))
    assert remote.manifest.equals(local.manifest)
    assert verify_store(remote.url) == []
