"""The checkpoint contract: whole checkpoints load, partial or damaged ones are refused by name."""

import json

import pytest
import torch

from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.artifacts.checkpoint import (
    ENCODER_FILE,
    META_FILE,
    TRAIN_STATE_FILE,
    CheckpointError,
    load_encoder,
    load_train_state,
    save_checkpoint,
)

TINY = BackboneConfig("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                                               "num_heads": 2})
META = {"model": {"name": TINY.name, "kwargs": TINY.kwargs}, "in_chans": 2, "image_size": 32, "scale": 255.0,
        "mean": [0.1, 0.2], "std": [0.3, 0.4], "embed_dim": 32, "step": 7}


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    encoder = create_backbone(TINY, 2).eval()
    state = {"step": 7, "epoch": 1, "state": {"w": torch.arange(4.0)}}
    save_checkpoint(tmp_path / "ckpt", encoder, META, train_state=state)
    return tmp_path / "ckpt", encoder


def test_a_whole_checkpoint_loads_its_encoder_and_train_state(checkpoint):
    path, encoder = checkpoint
    rebuilt, meta = load_encoder(str(path))
    x = torch.rand(2, 2, 32, 32)
    assert torch.allclose(encoder(x), rebuilt(x)) and meta.step == 7
    state = load_train_state(str(path))
    assert state["epoch"] == 1 and torch.equal(state["state"]["w"], torch.arange(4.0))
    assert set(json.loads((path / META_FILE).read_text())["files"]) == {ENCODER_FILE, TRAIN_STATE_FILE}


@pytest.mark.parametrize("name", [ENCODER_FILE, TRAIN_STATE_FILE])
def test_a_file_cut_short_is_refused_by_name(checkpoint, name):
    path, _ = checkpoint
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    load = load_encoder if name == ENCODER_FILE else load_train_state
    with pytest.raises(CheckpointError, match=f"{name} does not match the SHA-256"):
        load(str(path))


def test_a_missing_file_is_named(checkpoint):
    path, _ = checkpoint
    (path / TRAIN_STATE_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"incomplete: {TRAIN_STATE_FILE} is missing"):
        load_train_state(str(path))


def test_a_file_from_another_checkpoint_is_refused(checkpoint, tmp_path):
    path, _ = checkpoint
    other = create_backbone(TINY, 2)  # same shapes, other values: loads fine without the hash check
    save_checkpoint(tmp_path / "other", other, META)
    (path / ENCODER_FILE).write_bytes((tmp_path / "other" / ENCODER_FILE).read_bytes())
    with pytest.raises(CheckpointError, match=ENCODER_FILE):
        load_encoder(str(path))


def test_a_truncated_metadata_file_is_named(checkpoint):
    path, _ = checkpoint
    text = (path / META_FILE).read_text()
    (path / META_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=f"{META_FILE}: not valid JSON"):
        load_encoder(str(path))


def test_format_1_checkpoints_without_hashes_still_load(checkpoint):
    path, encoder = checkpoint
    meta = json.loads((path / META_FILE).read_text())
    del meta["files"]
    (path / META_FILE).write_text(json.dumps(meta | {"format_version": 1}))
    rebuilt, _ = load_encoder(str(path))
    x = torch.rand(1, 2, 32, 32)
    assert torch.allclose(encoder(x), rebuilt(x))
