"""Backbones, weight loading (weights_only) and the checkpoint contract."""

import pytest
import torch

from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.models.weights import WeightsError, load_backbone_weights
from sslray.train.checkpoint import load_encoder, save_encoder

TINY = BackboneConfig("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                                               "num_heads": 2})


@pytest.mark.parametrize("in_chans", [1, 3, 7])
def test_any_channel_count_and_multi_crop_sizes(in_chans):
    model = create_backbone(TINY, in_chans)
    assert model(torch.rand(2, in_chans, 32, 32)).shape == (2, 32)
    assert model(torch.rand(2, in_chans, 16, 16)).shape == (2, 32)  # dynamic_img_size for local crops


def test_unknown_timm_name_is_named():
    with pytest.raises(ValueError, match="not_a_model"):
        BackboneConfig("not_a_model")


def test_state_dict_round_trip_with_wrapper_prefixes(tmp_path):
    source = create_backbone(TINY, 3)
    path = tmp_path / "teacher.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in source.state_dict().items()}}, path)  # DINO layout
    target = create_backbone(TINY, 3)
    load_backbone_weights(target, str(path))
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(source.eval()(x), target.eval()(x))


def test_wrong_shapes_give_a_clear_error(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(create_backbone(TINY, 3).state_dict(), path)
    with pytest.raises(WeightsError, match=r"w.pth.*patch_embed.proj.weight: file \(32, 3, 8, 8\) vs model \(32, 5, 8, 8\)"):
        load_backbone_weights(create_backbone(TINY, 5), str(path))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a whole module, not a state dict
    with pytest.raises(WeightsError, match="weights-only"):
        load_backbone_weights(create_backbone(TINY, 3), str(path))


def test_checkpoint_rebuilds_the_encoder_alone(tmp_path):
    encoder = create_backbone(TINY, 2).eval()
    meta = {"model": {"name": TINY.name, "kwargs": TINY.kwargs}, "in_chans": 2, "image_size": 32, "scale": 255.0,
            "mean": [0.1, 0.2], "std": [0.3, 0.4], "embed_dim": 32}
    save_encoder(tmp_path / "ckpt", encoder, meta)
    rebuilt, loaded_meta = load_encoder(str(tmp_path / "ckpt"))
    x = torch.rand(2, 2, 32, 32)
    assert torch.allclose(encoder(x), rebuilt(x)) and loaded_meta["mean"] == [0.1, 0.2]
    with pytest.raises(FileNotFoundError, match="not an sslray checkpoint"):
        load_encoder(str(tmp_path))
