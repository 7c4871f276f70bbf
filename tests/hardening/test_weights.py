"""Issue 11: weight files that fit only partly, or are pickles, are refused by name."""

import io
import json

import pytest
import torch

from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.models.weights import WeightsError, load_backbone_weights
from sslray.train.checkpoint import ENCODER_FILE, META_FILE, TRAIN_STATE_FILE, load_encoder, load_train_state, save_checkpoint

KWARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "num_heads": 2}
NAME = "vit_tiny_patch16_224"


def _vit(depth: int) -> torch.nn.Module:
    return create_backbone(BackboneConfig(NAME, {**KWARGS, "depth": depth}), 3)


def _meta(depth: int) -> dict:
    return {"model": {"name": NAME, "kwargs": {**KWARGS, "depth": depth}}, "in_chans": 3, "image_size": 32,
            "scale": 255.0, "mean": [0.5] * 3, "std": [0.2] * 3, "embed_dim": 32}


class NotWeights:
    """Any custom class: torch.save pickles it by reference, so loading it would import and run code."""


def test_a_checkpoint_whose_json_names_fewer_blocks_than_its_weights_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ckpt", _vit(4), _meta(2))  # sslray.json says 2 blocks, the weights have 4
    with pytest.raises(WeightsError) as err:
        load_encoder(str(tmp_path / "ckpt"))
    message = str(err.value)
    assert ENCODER_FILE in message and "unexpected" in message
    assert "24 unexpected key(s)" in message and "blocks.2.attn.qkv.weight" in message  # 12 tensors per block
    assert message.count("blocks.") == 5  # five keys named, not 24
    assert f"{META_FILE} describes {NAME} with" in message and "'depth': 2" in message


def test_extra_blocks_in_a_plain_state_dict_are_an_error_too(tmp_path):
    torch.save(_vit(3).state_dict(), tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=r"w.pth: weights do not fit.*12 unexpected key\(s\).*blocks\.2\."):
        load_backbone_weights(_vit(2), str(tmp_path / "w.pth"))


def test_published_heads_are_still_ignored(tmp_path):
    """DINO/iBOT teacher (backbone.* + head.*) and timm classifier (head.weight) layouts still load."""
    source = _vit(2)
    dino_head = {"head.mlp.0.weight": torch.zeros(8, 32), "head.last_layer.weight_g": torch.ones(8, 1)}
    teacher = {**{f"backbone.{k}": v for k, v in source.state_dict().items()}, **dino_head}
    torch.save({"teacher": teacher, "student": {}}, tmp_path / "dino.pth")
    torch.save({**source.state_dict(), "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)},
               tmp_path / "timm.pth")
    x = torch.rand(1, 3, 32, 32)
    for name in ("dino.pth", "timm.pth"):
        target = _vit(2)
        load_backbone_weights(target, str(tmp_path / name))
        assert torch.allclose(source.eval()(x), target.eval()(x))


def test_a_pickled_train_state_is_refused_naming_the_file(tmp_path):
    save_checkpoint(tmp_path / "ckpt", _vit(1), _meta(1), train_state={"step": 1, "obj": NotWeights()})
    with pytest.raises(WeightsError) as err:
        load_train_state(str(tmp_path / "ckpt"))
    message = str(err.value)
    assert str(tmp_path / "ckpt" / TRAIN_STATE_FILE) in message and "refused for safety" in message
    assert "NotWeights" in message and "state_dict" in message
    assert "weights_only=False" not in message


@pytest.mark.parametrize("name", ["w.pt", "w.pth"])
def test_a_pickled_weight_file_is_refused_for_safety(tmp_path, name):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / name)
    with pytest.raises(WeightsError) as err:
        load_backbone_weights(_vit(1), str(tmp_path / name))
    message = str(err.value)
    assert message.startswith(str(tmp_path / name)) and "refused for safety" in message
    assert "weights_only=False" not in message and "torch.nn.modules.linear.Linear" in message


def test_a_pickle_named_safetensors_is_refused_not_unpickled(tmp_path):
    save_checkpoint(tmp_path / "ckpt", _vit(1), _meta(1))
    buffer = io.BytesIO()
    torch.save(_vit(1).state_dict(), buffer)  # a harmless pickle, but .safetensors files are never unpickled
    (tmp_path / "ckpt" / ENCODER_FILE).write_bytes(buffer.getvalue())
    meta = json.loads((tmp_path / "ckpt" / META_FILE).read_text())
    meta["files"].pop(ENCODER_FILE)
    (tmp_path / "ckpt" / META_FILE).write_text(json.dumps(meta | {"format_version": 1}))
    with pytest.raises(WeightsError, match=rf"{ENCODER_FILE}: refused for safety: .* really a pickle") as err:
        load_encoder(str(tmp_path / "ckpt"))
    assert "weights_only=False" not in str(err.value)


def test_a_corrupt_train_state_names_the_file(tmp_path):
    save_checkpoint(tmp_path / "ckpt", _vit(1), _meta(1), train_state={"step": 1})
    (tmp_path / "ckpt" / TRAIN_STATE_FILE).write_bytes(b"not a torch file")
    meta = json.loads((tmp_path / "ckpt" / META_FILE).read_text())
    del meta["files"]
    (tmp_path / "ckpt" / META_FILE).write_text(json.dumps(meta | {"format_version": 1}))
    with pytest.raises(WeightsError, match=rf"{TRAIN_STATE_FILE}: not a readable torch file"):
        load_train_state(str(tmp_path / "ckpt"))
