"""Storage: one way to touch local and remote files; outputs staged, published whole, never over foreign files.

The destination rules end to end (CLI, S3) are in tests/hardening/test_destinations.py.
"""

import json
import os

import pytest

from sslray import storage
from sslray.credentials import CredentialsError


def test_urls_and_local_paths():
    assert storage.local_path("file:///a/b") == "/a/b" and storage.local_path("s3://b/k") == "s3://b/k"
    assert storage.local_path("x/y") == os.path.abspath("x/y")
    assert storage.is_remote("s3://b/k") and not storage.is_remote("file:///a") and not storage.is_remote("/a")
    assert storage.join("s3://b/", "/k/", "f.json") == "s3://b/k/f.json"
    with pytest.raises(CredentialsError, match="URL: s3://<redacted>@b/k carries credentials inline"):
        storage.exists("s3://KEY:SECRET@b/k")


def test_written_files_appear_whole_with_no_temp_files_left(tmp_path):
    url = str(tmp_path / "deep" / "f.json")
    storage.write_json(url, {"b": 1, "a": [2]})
    assert storage.read_json(url) == {"a": [2], "b": 1} and os.listdir(tmp_path / "deep") == ["f.json"]
    storage.write_bytes(url, b"new", durable=False)
    assert storage.read_bytes(url) == b"new"
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        storage.read_bytes(str(tmp_path / "nope"))
    storage.remove(str(tmp_path / "deep"))
    storage.remove(str(tmp_path / "deep"))  # removing what is gone is fine
    assert not (tmp_path / "deep").exists()


def test_an_output_is_hidden_until_published_and_then_knows_its_kind(tmp_path):
    dest = str(tmp_path / "emb")
    staging = storage.begin_output(dest, what="embeddings table", kind="embeddings")
    assert os.path.basename(staging).startswith(".emb.partial-") and not os.path.exists(dest)
    storage.write_bytes(storage.join(staging, "part-0.parquet"), b"rows")
    assert storage.artifact_kind(staging) is None  # unfinished: no kind yet
    storage.publish_output(staging, dest, {"n_rows": 1})
    assert not os.path.exists(staging) and sorted(os.listdir(dest)) == ["_SUCCESS", "part-0.parquet"]
    assert json.loads((tmp_path / "emb" / "_SUCCESS").read_text()) == {"kind": "embeddings", "n_rows": 1}
    assert storage.artifact_kind(dest) == "embeddings" and storage.is_complete(dest)


def test_a_finished_output_is_replaced_only_by_its_kind_and_only_with_overwrite(tmp_path):
    dest = str(tmp_path / "emb")
    storage.publish_output(storage.begin_output(dest, kind="embeddings"), dest, {})
    with pytest.raises(FileExistsError, match="pass overwrite=true"):
        storage.begin_output(dest, kind="embeddings")
    with pytest.raises(storage.OutputError, match="is an sslray embeddings, not a tile store"):
        storage.begin_output(dest, overwrite=True, what="tile store", kind="tile_store")
    storage.publish_output(storage.begin_output(dest, overwrite=True, kind="embeddings"), dest, {"n_rows": 2})
    assert storage.read_json(storage.join(dest, "_SUCCESS"))["n_rows"] == 2
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no staging or trash left behind


def test_foreign_folders_and_files_are_never_destinations(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(storage.OutputError, match="not an sslray output .*holds thesis.tex"):
        storage.check_destination(str(tmp_path / "mine"), "embeddings", "output", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(storage.OutputError, match="a file is there, not a folder"):
        storage.check_destination(str(tmp_path / "file"), "embeddings", "output")
    with pytest.raises(storage.OutputError, match="is a file, not a folder"):
        storage.check_folder(str(tmp_path / "file" / "runs"), "run directory (out)")
    (tmp_path / "empty").mkdir()
    storage.check_destination(str(tmp_path / "empty"), "embeddings", "output")  # an empty folder is fine


def test_a_resumable_output_keeps_one_staging_place_until_overwrite(tmp_path):
    dest = str(tmp_path / "s")
    staging = storage.begin_resumable_output(dest, what="tile store", kind="tile_store")
    storage.write_bytes(storage.join(staging, "_ingest", "part"), b"done")
    assert storage.begin_resumable_output(dest, what="tile store", kind="tile_store") == staging
    assert storage.exists(storage.join(staging, "_ingest", "part"))
    storage.begin_resumable_output(dest, overwrite=True, what="tile store", kind="tile_store")
    assert not storage.exists(storage.join(staging, "_ingest", "part"))


def test_old_artifacts_without_a_recorded_kind_are_told_by_their_files(tmp_path):
    for name, marker_info, inner, kind in (("store", {}, "tiles.zarr", "tile_store"),
                                           ("spots", {"spot_column": "spot"}, None, "spot_table"),
                                           ("emb", {"n_rows": 3}, None, "embeddings")):
        (tmp_path / name).mkdir()
        if inner:
            (tmp_path / name / inner).mkdir()
        storage.mark_complete(str(tmp_path / name), marker_info)
        assert storage.artifact_kind(str(tmp_path / name)) == kind
    assert storage.artifact_kind(str(tmp_path / "nothing")) is None


def test_storage_marker_helpers(tmp_path):
    url = str(tmp_path / "out")
    staging = storage.begin_output(url)
    storage.write_json(storage.join(staging, "x.json"), {"a": 1})
    assert not storage.exists(url)
    storage.publish_output(staging, url, {"n": 1})
    assert storage.is_complete(url) and storage.read_json(storage.join(url, "x.json")) == {"a": 1}
    with pytest.raises(FileExistsError):
        storage.begin_output(url)
