"""No user file is ever deleted or replaced: what sslray may write over, and what it refuses."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslray import storage
from sslray.cli import main
from sslray.data.ingest import IngestConfig, IngestError, ingest_folder
from tests.conftest import write_png


@pytest.fixture
def images(tmp_path):
    """Two 64-px PNG fields in class folders: enough for a one-tile-each store."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        write_png(tmp_path / "src" / label / "x.png", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    return tmp_path / "src"


def ingest(src, dest, **kwargs):
    return ingest_folder(IngestConfig(**{"src": str(src), "out": str(dest), "tile_size": 32, "workers": 0, **kwargs}))


def cli_ingest(src, dest, capsys, *extra) -> tuple[int, str]:
    code = main(["ingest", str(src), str(dest), "--tile-size", "32", "--workers", "0", *extra])
    return code, capsys.readouterr().err


def test_a_folder_with_user_files_is_never_replaced_even_with_overwrite(images, tmp_path, capsys):
    dest = tmp_path / "mydir"
    dest.mkdir()
    (dest / "notes.txt").write_text("x")
    for extra in ([], ["--overwrite"]):
        code, err = cli_ingest(images, dest, capsys, *extra)
        assert code == 2
        assert "is not an sslray tile store" in err and "notes.txt" in err and "never" in err
        assert (dest / "notes.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydir", "src"]  # no staging left behind


def test_dest_equal_to_or_inside_src_is_refused_and_sources_stay(images, tmp_path, capsys):
    before = sorted(p.relative_to(images) for p in images.rglob("*"))
    assert cli_ingest(images, images, capsys)[0] == 2
    code, err = cli_ingest(images, images / "store", capsys)
    assert code == 2 and "inside the source folder" in err
    with pytest.raises(IngestError, match="source folder .* is inside the destination"):
        ingest(images / "a", images)
    assert sorted(p.relative_to(images) for p in images.rglob("*")) == before


def test_a_regular_file_at_or_above_dest_is_refused(images, tmp_path, capsys):
    target = tmp_path / "store.zarr"
    target.write_text("keep me")
    code, err = cli_ingest(images, target, capsys, "--overwrite")
    assert code == 2 and "a file is there" in err and "Errno" not in err
    assert target.read_text() == "keep me"
    assert not list(tmp_path.glob("store.zarr.old-*"))
    code, err = cli_ingest(images, target / "below", capsys)
    assert code == 2 and f"{target} is a file, not a folder" in err


def test_a_store_is_replaced_only_by_a_store_and_only_with_overwrite(images, tmp_path):
    dest = tmp_path / "store"
    first = ingest(images, dest)
    with pytest.raises(IngestError, match="already exists; pass overwrite"):
        ingest(images, dest)
    replaced = ingest(images, dest, overwrite=True, tile_size=16)
    assert len(replaced) == 4 * len(first)
    assert storage.artifact_kind(str(dest)) == "tile_store"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # trash and staging are gone


def test_an_empty_folder_is_a_valid_destination(images, tmp_path):
    dest = tmp_path / "empty"
    dest.mkdir()
    assert len(ingest(images, dest)) == 8
    assert storage.artifact_kind(str(dest)) == "tile_store"


def test_an_embeddings_table_is_not_replaced_by_a_store(images, tmp_path):
    table = tmp_path / "emb"
    staging = storage.begin_output(str(table), what="embeddings table", kind="embeddings")
    pq.write_table(pa.table({"embedding": [[0.0, 1.0]]}), f"{staging}/part-0.parquet")
    storage.publish_output(staging, str(table), {"n_rows": 1})
    with pytest.raises(IngestError, match="is an sslray embeddings, not a tile store"):
        ingest(images, table, overwrite=True)
    assert (table / "part-0.parquet").exists()


def test_embed_refuses_a_folder_with_user_files_before_starting_work(tiny_store, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "figure.png").write_bytes(b"png")
    code = main(["embed", "--checkpoint", str(tmp_path / "no-checkpoint"), "--store", tiny_store.url,
                 "--out", str(out), "overwrite=true"])
    err = capsys.readouterr().err
    assert code == 2 and "is not an sslray embeddings table" in err and "figure.png" in err
    assert (out / "figure.png").read_bytes() == b"png"


def test_publish_rechecks_a_destination_filled_while_the_job_ran(tmp_path):
    dest = tmp_path / "out"
    staging = storage.begin_output(str(dest), what="embeddings table", kind="embeddings")
    (tmp_path / "out").mkdir()
    (dest / "mine.csv").write_text("1")
    with pytest.raises(storage.OutputError, match="left in"):
        storage.publish_output(staging, str(dest), {})
    assert (dest / "mine.csv").read_text() == "1"
    assert storage.exists(storage.join(staging, storage.SUCCESS_MARKER))  # the finished work is kept


def test_remote_destination_with_foreign_objects_is_left_alone(s3_server):
    from sslray.data.store import StoreError, TileStoreWriter

    url = f"{s3_server}/foreign"
    storage.write_bytes(f"{url}/data.csv", b"1,2")
    with pytest.raises(StoreError, match="is not an sslray tile store"):
        TileStoreWriter(url, ["gray"], np.uint8, 16, overwrite=True)
    assert storage.read_bytes(f"{url}/data.csv") == b"1,2"


def test_run_directory_that_is_a_file_is_named(tmp_path):
    target = tmp_path / "runs"
    target.write_text("x")
    with pytest.raises(storage.OutputError, match="a file is there"):
        storage.ensure_folder(str(target), "run directory (out)")


@pytest.mark.parametrize("stage", ["pretrain", "evaluate"])
def test_a_run_directory_that_is_a_file_is_refused_before_any_work(tiny_store, tmp_path, capsys, stage):
    target = tmp_path / "runs"
    target.write_text("keep")
    args = {"pretrain": ["pretrain", "--config", "configs/quickstart.yaml", f"store={tiny_store.url}"],
            "evaluate": ["evaluate", "--embeddings", str(tmp_path / "emb")]}[stage]
    code = main([*args, f"run_dir={target}"])
    err = capsys.readouterr().err
    assert code == 2 and f"run directory (run_dir) {target}: a file is there" in err and "Errno" not in err
    assert target.read_text() == "keep"


def test_artifacts_published_before_kinds_were_recorded_are_recognised(tmp_path):
    for name, files, info, kind in [("store", ["tiles.zarr/zarr.json"], {"n_tiles": 1}, "tile_store"),
                                    ("spots", ["_aggregator/sslray.json"], {"n_rows": 1}, "spot_table"),
                                    ("pooled", ["part-00000.parquet"], {"spot_column": "image_id"}, "spot_table"),
                                    ("emb", ["part-0.parquet"], {"n_rows": 1}, "embeddings")]:
        for rel in files:
            (tmp_path / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / rel).write_text("{}")
        storage.write_json(str(tmp_path / name / storage.SUCCESS_MARKER), info)
        assert storage.artifact_kind(str(tmp_path / name)) == kind, name
