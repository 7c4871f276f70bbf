"""Layouts: wrappers stripped, layouts detected, Hugging Face and torchvision ViT names mapped to timm's
so the renamed weights give the same features."""

import pytest
import torch

from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.models.layouts import (LayoutError, detect_layout, set_layer_norm_eps, strip_wrappers, to_timm,
                                   torchvision_vit_to_timm)
from sslray.models.weights import load_state
from tests.models.hf_vit import timm_to_hf

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}


def _tiny_vit(**more) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_backbone(BackboneConfig("vit_tiny_patch16_224", TINY | more), 3).eval()


def _t(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


def test_wrappers_are_stripped_and_heads_kept_to_be_named():
    state = {"module.teacher.backbone.cls_token": _t(1), "module.teacher.head.w": _t(1),
             "module.student.backbone.cls_token": _t(2)}
    assert set(strip_wrappers(state)) == {"cls_token", "head.w"}  # DINO's teacher, not its student


def test_hugging_face_encoder_prefix_is_not_taken_for_a_wrapper():
    state = {"embeddings.cls_token": _t(1), "encoder.layer.0.output.dense.weight": _t(1)}
    assert strip_wrappers(state) == state
    assert set(strip_wrappers({f"vit.{k}": v for k, v in state.items()} | {"classifier.weight": _t(1)})) \
        == set(state) | {"classifier.weight"}


@pytest.mark.parametrize("version", [4, 5])
def test_hugging_face_vit_names_give_the_same_features(version):
    source = _tiny_vit()
    hf = timm_to_hf(source.state_dict(), version)
    assert detect_layout(hf) == "hf_vit"
    state, layout = to_timm({f"vit.{k}": v for k, v in hf.items()}, "auto")
    target = create_backbone(BackboneConfig("vit_tiny_patch16_224", TINY), 3).eval()
    load_state(target, state, "hf.safetensors")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))
    assert layout == "hf_vit" and not any(k.startswith("pooler") for k in state)


def test_a_block_without_its_value_projection_is_named():
    hf = timm_to_hf(_tiny_vit().state_dict())
    del hf["encoder.layer.1.attention.attention.value.bias"]
    with pytest.raises(LayoutError, match="w.pth: the attention of layer 1 has key, query bias but not all"):
        to_timm(hf, "hf_vit", "w.pth")


def test_torchvision_vit_names_give_the_same_features():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    reference = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                  mlp_dim=64).eval()
    state, layout = to_timm(reference.state_dict(), "torchvision")
    target = _tiny_vit(global_pool="token")
    load_state(target, state, "vit.pth")
    reference.heads = torch.nn.Identity()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), reference(x))
    assert layout == "torchvision_vit" and detect_layout(reference.state_dict()) == "torchvision_vit"


def test_torchvision_mlp_names_of_older_releases_map_too():
    old = {"encoder.layers.encoder_layer_0.mlp.linear_1.weight": _t(1), "encoder.layers.encoder_layer_3.mlp.3.bias": _t(1)}
    assert set(torchvision_vit_to_timm(old)) == {"blocks.0.mlp.fc1.weight", "blocks.3.mlp.fc2.bias"}


def test_torchvision_resnet_names_are_timms():
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    assert to_timm(state, "torchvision") == (state, "torchvision")
    assert to_timm(state, "auto")[1] == "timm"


def test_another_torchvision_architecture_is_refused_by_name():
    with pytest.raises(LayoutError, match=r"d.pth: --layout torchvision maps ResNets .* features.0.0.weight"):
        to_timm({"features.0.0.weight": _t(1), "classifier.1.weight": _t(1)}, "torchvision", "d.pth")


def test_a_layout_that_does_not_match_the_keys_says_which_it_is():
    hf = timm_to_hf(_tiny_vit().state_dict())
    with pytest.raises(LayoutError, match="asked for but the keys are in the hf_vit layout"):
        to_timm(hf, "timm")
    with pytest.raises(LayoutError, match="keys are in the timm layout"):
        to_timm(_tiny_vit().state_dict(), "hf_vit")
    with pytest.raises(LayoutError, match="layout must be one of"):
        to_timm({}, "keras")


def test_layer_norm_eps_is_set_on_every_layer_norm():
    model = _tiny_vit()
    assert set_layer_norm_eps(model, 1e-12) == 2 * 2 + 1  # norm1 and norm2 per block, the final norm
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-12}
