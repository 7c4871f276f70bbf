"""Backbones, weight loading (weights_only) and the checkpoint contract."""

import pytest
import torch

from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.models.weights import WeightsError, load_backbone_weights
from sslray.train.checkpoint import load_encoder, save_checkpoint
from tests.models.hf_vit import timm_to_hf

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
    torch.save(create_backbone(TINY, 2).state_dict(), path)  # 2 channels: no rule adapts them to 5
    with pytest.raises(WeightsError, match=r"w.pth.*patch_embed.proj.weight: file \(32, 2, 8, 8\) vs model \(32, 5, 8, 8\)"):
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
    save_checkpoint(tmp_path / "ckpt", encoder, meta)
    rebuilt, loaded_meta = load_encoder(str(tmp_path / "ckpt"))
    x = torch.rand(2, 2, 32, 32)
    assert torch.allclose(encoder(x), rebuilt(x)) and loaded_meta.mean == [0.1, 0.2]
    with pytest.raises(FileNotFoundError, match="not an sslray checkpoint"):
        load_encoder(str(tmp_path))


def test_torchvision_resnet_weights_load_into_timm_resnet(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = create_backbone(BackboneConfig("resnet18", {}, str(tmp_path / "resnet18.pth")), 3).eval()
    reference.fc = torch.nn.Identity()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_hugging_face_vit_weights_such_as_phikon_map_onto_timm(tmp_path):
    torch.manual_seed(0)
    source = create_backbone(TINY, 3).eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in timm_to_hf(source.state_dict()).items()}, tmp_path / "model.safetensors")
    target = create_backbone(BackboneConfig(TINY.name, TINY.kwargs, str(tmp_path / "model.safetensors")), 3).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize("in_chans", [1, 5])
def test_rgb_weights_adapt_to_other_channel_counts_by_the_documented_rule(tmp_path, in_chans):
    torch.manual_seed(0)
    rgb = create_backbone(TINY, 3)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pth")
    model = create_backbone(BackboneConfig(TINY.name, TINY.kwargs, str(tmp_path / "rgb.pth")), in_chans)
    theirs, ours = rgb.patch_embed.proj.weight, model.patch_embed.proj.weight
    if in_chans == 1:  # summed: a grey image answers like the RGB image with that grey in every channel
        torch.testing.assert_close(ours, theirs.sum(1, keepdim=True))
        grey = torch.rand(2, 1, 32, 32)
        torch.testing.assert_close(model.patch_embed.proj(grey), rgb.patch_embed.proj(grey.expand(-1, 3, -1, -1)))
    else:  # repeated R, G, B, R, G and scaled by 3/5
        torch.testing.assert_close(ours, theirs[:, [0, 1, 2, 0, 1]] * 3 / 5)


def test_patch_size_mismatch_is_still_a_named_error(tmp_path):
    torch.save(create_backbone(TINY, 3).state_dict(), tmp_path / "p8.pth")
    other = BackboneConfig(TINY.name, {**TINY.kwargs, "patch_size": 4}, str(tmp_path / "p8.pth"))
    with pytest.raises(WeightsError, match=r"p8.pth: weights do not fit.*patch_embed.proj.weight: file \(32, 3, 8, 8\) "
                                           r"vs model \(32, 3, 4, 4\)"):
        create_backbone(other, 3)


def test_safetensors_are_told_by_their_content_not_only_their_name(tmp_path):
    from safetensors.torch import save_file

    from sslray.models.weights import read_state_dict

    save_file({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin")  # as a download link may name it
    assert torch.equal(read_state_dict(str(tmp_path / "pytorch_model.bin"))["w"], torch.ones(2))


def test_a_training_checkpoint_with_more_than_tensors_is_named(tmp_path):
    from sslray.models.weights import read_state_dict

    torch.save({"w": torch.ones(2), "epoch": 7}, tmp_path / "ckpt.pth")
    with pytest.raises(WeightsError, match="ckpt.pth: expected a state dict of tensors, but epoch holds"):
        read_state_dict(str(tmp_path / "ckpt.pth"))
