"""Artifact kinds: what is at a URL, and one refusal that says so when it is not what a stage reads."""

import json

import pytest

from sslray import storage
from sslray.artifacts.kinds import describe, require_artifact, unfinished_kind


def _published(url, kind: str) -> str:
    staging = storage.begin_output(str(url), False, what=kind, kind=kind)
    storage.write_json(storage.join(staging, "x.json"), {})
    storage.publish_output(staging, str(url), {"kind": kind})
    return str(url)


def test_describe_picks_the_article_and_names_unknown_kinds():
    assert describe("tile_store") == "a tile store"
    assert describe("embeddings") == "an embeddings table"
    assert describe("checkpoint") == "a checkpoint"
    assert describe("attention_map").endswith("sslray attention map")  # a kind without a display name


def test_a_finished_artifact_of_a_wanted_kind_passes(tmp_path):
    url = _published(tmp_path / "spots", "spot_table")
    require_artifact(url, ("embeddings", "spot_table"))


def test_another_kind_is_named_with_how_to_make_the_wanted_one(tmp_path):
    url = _published(tmp_path / "spots", "spot_table")
    with pytest.raises(ValueError, match=r"is a spot table, not an embeddings table; pass an embeddings table "
                                         r"\(`sslray embed"):
        require_artifact(url, ("embeddings",))


def test_nothing_there_raises_the_missing_error(tmp_path):
    with pytest.raises(KeyError, match="no tile store at .* the path does not exist"):
        require_artifact(str(tmp_path / "nope"), ("tile_store",), missing=KeyError)


def test_a_file_and_a_foreign_folder_are_told_apart(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file, not a tile store"):
        require_artifact(str(tmp_path / "a.png"), ("tile_store",))
    with pytest.raises(ValueError, match="is not an sslray tile store .*did you mean to `sslray ingest`"):
        require_artifact(str(tmp_path), ("tile_store",))


def test_an_unfinished_artifact_is_incomplete_and_says_how_to_finish_it(tmp_path):
    (tmp_path / ".emb.partial").mkdir()
    (tmp_path / ".emb.partial" / storage.WRITING_MARKER).write_text(json.dumps({"kind": "embeddings"}))
    assert unfinished_kind(str(tmp_path / "emb")) == "embeddings"
    with pytest.raises(FileNotFoundError, match=r"embeddings table .*/emb is incomplete .*run `sslray embed` again"):
        require_artifact(str(tmp_path / "emb"), ("embeddings",))
    with pytest.raises(ValueError, match="is an unfinished embeddings table, not a tile store"):
        require_artifact(str(tmp_path / "emb"), ("tile_store",))


def test_unmarked_outputs_are_told_by_their_files(tmp_path):
    (tmp_path / "store" / "tiles.zarr").mkdir(parents=True)
    (tmp_path / "spots" / "_aggregator").mkdir(parents=True)
    (tmp_path / "plain").mkdir()
    assert unfinished_kind(str(tmp_path / "store")) == "tile_store"
    assert unfinished_kind(str(tmp_path / "spots")) == "spot_table"
    assert unfinished_kind(str(tmp_path / "plain")) is None


def test_an_unreadable_writing_marker_is_no_kind(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / storage.WRITING_MARKER).write_text("{not json")
    assert unfinished_kind(str(tmp_path / "out")) is None


def test_a_checkpoint_is_finished_by_its_files(tmp_path):
    for name in ("sslray.json", "encoder.safetensors"):
        (tmp_path / name).write_text("{}")
    require_artifact(str(tmp_path), ("checkpoint",))
    with pytest.raises(ValueError, match="is a checkpoint, not a tile store"):
        require_artifact(str(tmp_path), ("tile_store",))


def test_explanations_are_a_kind_named_when_handed_to_another_stage(tmp_path):
    assert describe("explanations") == "an explanations folder"
    url = _published(tmp_path / "explained", "explanations")
    require_artifact(url, ("explanations",))
    with pytest.raises(ValueError, match="is an explanations folder, not a tile store"):
        require_artifact(url, ("tile_store",))
