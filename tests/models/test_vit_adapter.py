"""The ViT adapter: timm's forward_features rebuilt step by step, masking before positions,
kept tokens, the pieces attention maps will need, and non-ViTs refused."""

import pytest
import torch

from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.models.vit_adapter import ViTAdapter, num_prefix_tokens, patch_grid, replace_masked, select_tokens

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}


def _vit(**kwargs) -> ViTAdapter:
    torch.manual_seed(0)
    model = create_backbone(BackboneConfig("vit_tiny_patch16_224", {**TINY_VIT, **kwargs}), in_chans=2)
    return ViTAdapter(model.eval())


@pytest.mark.parametrize("kwargs", [{}, {"reg_tokens": 2}, {"global_pool": "avg", "class_token": False},
                                    {"no_embed_class": True}])
def test_unmasked_forward_is_timms_forward_features(kwargs):
    vit = _vit(**kwargs)
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(vit.forward_features(x), vit.model.forward_features(x))
        wide = torch.randn(1, 2, 24, 40)  # dynamic_img_size: positions are resampled to the grid
        assert torch.equal(vit.forward_tokens(vit.tokens(wide)), vit.model.forward_features(wide))
        assert torch.equal(vit.forward_head(vit.forward_features(x)), vit.model(x))


def test_token_shapes_grid_and_properties():
    vit = _vit(reg_tokens=4)
    assert vit.num_prefix_tokens == 5 and num_prefix_tokens(vit.model) == 5
    assert (vit.patch_size, vit.in_chans, vit.img_size) == ((8, 8), 2, (32, 32))
    assert vit.patch_grid((24, 40)) == patch_grid(vit.model, (24, 40)) == (3, 5)
    with torch.no_grad():
        assert vit.tokens(torch.randn(3, 2, 24, 40)).shape == (3, 5 + 15, 32)


def test_masked_patches_get_the_embedding_and_keep_their_position():
    vit = _vit()
    x = torch.randn(1, 2, 32, 32)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 6] = True
    embedding = torch.randn(32)
    with torch.no_grad():
        plain, masked = vit.tokens(x), vit.tokens(x, mask, embedding)
        position = plain[0, 1 + 6] - vit.model.patch_embed(x).reshape(1, 16, 32)[0, 6]
        assert torch.allclose(masked[0, 1 + 6], embedding + position, atol=1e-6)
        unmasked = torch.ones(17, dtype=torch.bool)
        unmasked[1 + 6] = False
        assert torch.equal(masked[0, unmasked], plain[0, unmasked])
    with pytest.raises(ValueError, match="mask_embedding"):
        vit.tokens(x, mask)


def test_kept_tokens_are_the_only_ones_encoded_in_the_given_order():
    vit = _vit()
    x = torch.randn(2, 2, 32, 32)
    keep = torch.tensor([[0, 5, 9, 15], [3, 4, 8, 12]])
    with torch.no_grad():
        tokens = vit.tokens(x)
        encoded = vit.forward_tokens(tokens, keep_indices=keep)
        assert encoded.shape == (2, 1 + 4, 32)
        everything = vit.forward_tokens(tokens, keep_indices=torch.arange(16).expand(2, 16))
        assert torch.equal(everything, vit.forward_tokens(tokens))  # identity keep = no keep
        changed = tokens.clone()
        changed[0, 1 + 1] += 3.0  # a token that is not kept
        assert torch.equal(vit.forward_tokens(changed, keep_indices=keep), encoded)
        flipped = vit.forward_tokens(tokens, keep_indices=keep.flip(1))  # blocks are permutation equivariant
        assert torch.allclose(flipped[:, 1:], encoded[:, 1:].flip(1), atol=1e-5)
        assert torch.allclose(flipped[:, 0], encoded[:, 0], atol=1e-5)


def test_blocks_one_at_a_time_compose_to_forward_tokens():
    """Attention maps will run every block but the last, then the last by hand."""
    vit = _vit()
    with torch.no_grad():
        tokens = vit.tokens(torch.randn(2, 2, 32, 32))
        before_last = vit.forward_blocks(vit.block_input(tokens), stop=-1)
        assert hasattr(vit.blocks[-1], "attn") and len(vit.blocks) == 3
        assert torch.equal(vit.norm(vit.blocks[-1](before_last)), vit.forward_tokens(tokens))


def test_gradient_checkpointing_gives_the_same_tokens_and_gradients():
    vit = _vit()
    x = torch.randn(2, 2, 32, 32)
    plain = vit.forward_features(x)
    plain.sum().backward()
    grad = vit.model.patch_embed.proj.weight.grad.clone()
    vit.model.zero_grad()
    vit.model.set_grad_checkpointing(True)
    checkpointed = vit.forward_features(x)
    checkpointed.sum().backward()
    assert torch.allclose(checkpointed, plain, atol=1e-6)
    assert torch.allclose(vit.model.patch_embed.proj.weight.grad, grad, atol=1e-5)


def test_replace_masked_keeps_the_embedding_in_the_graph_when_nothing_is_masked():
    embedding = torch.zeros(4, requires_grad=True)
    patches = torch.randn(2, 2, 3, 4)  # (B, H, W, D), as patch_embed gives with dynamic_img_size
    out = replace_masked(patches, torch.zeros(2, 6, dtype=torch.bool), embedding)
    out.sum().backward()
    assert torch.equal(out, patches) and embedding.grad is not None


def test_select_tokens_gathers_rows_per_sample():
    tokens = torch.arange(2 * 4 * 1.0).reshape(2, 4, 1)
    assert select_tokens(tokens, torch.tensor([[3, 0], [1, 2]]))[..., 0].tolist() == [[3, 0], [5, 6]]


def test_non_vits_are_refused_and_have_no_prefix_tokens():
    resnet = create_backbone(BackboneConfig("resnet18"), in_chans=2)
    with pytest.raises(TypeError, match="VisionTransformer.*ResNet"):
        ViTAdapter(resnet)
    assert num_prefix_tokens(resnet) == 0
