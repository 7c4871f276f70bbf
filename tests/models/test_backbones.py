"""Backbones from timm: headless, any channel count, ViTs that take any crop size, weights when named."""

import pytest
import torch
from safetensors.torch import save_file

from sslray.models.backbones import BackboneConfig, count_parameters, create_backbone, feature_dim, is_vit

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


def test_a_name_timm_does_not_know_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"model.name: 'vit_smal_patch16_224' is not a timm model"):
        BackboneConfig("vit_smal_patch16_224")


def test_a_backbone_is_headless_with_the_channels_asked_for():
    model = create_backbone(BackboneConfig("resnet18"), in_chans=5).eval()
    assert model.conv1.in_channels == 5
    assert model(torch.zeros(2, 5, 32, 32)).shape == (2, feature_dim(model)) and feature_dim(model) == 512


def test_a_vit_sees_global_and_local_crop_sizes():
    cfg = BackboneConfig("vit_tiny_patch16_224", dict(TINY_VIT))
    model = create_backbone(cfg, in_chans=2).eval()
    assert model(torch.zeros(1, 2, 32, 32)).shape == model(torch.zeros(1, 2, 16, 16)).shape == (1, 32)
    assert cfg.kwargs == TINY_VIT  # dynamic_img_size is set on the model, not written into the config


def test_an_explicit_kwarg_wins_over_the_vit_default():
    model = create_backbone(BackboneConfig("vit_tiny_patch16_224", {**TINY_VIT, "dynamic_img_size": False}), 1)
    with pytest.raises(AssertionError):  # timm checks the fixed input size
        model(torch.zeros(1, 1, 16, 16))


def test_weights_named_in_the_config_are_loaded(tmp_path):
    source = create_backbone(BackboneConfig("vit_tiny_patch16_224", TINY_VIT), in_chans=2)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = create_backbone(BackboneConfig("vit_tiny_patch16_224", TINY_VIT, str(tmp_path / "w.safetensors")), 2)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_vits_are_told_by_name_and_parameters_counted():
    assert is_vit("vit_small_patch16_224") and is_vit("deit_tiny_patch16_224") and not is_vit("resnet18")
    layer = torch.nn.Linear(3, 2)
    assert count_parameters(layer) == 3 * 2 + 2
