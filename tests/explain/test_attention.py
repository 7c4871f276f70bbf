"""Last-block class-token attention: equal to timm's own (unfused) attention matrix, rows that sum to 1,
one map per head on the patch grid, register tokens left out, one map set per channel image."""

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from sslray.artifacts.checkpoint import CheckpointMeta
from sslray.explain.attention import cls_attention, last_block_input, patch_attention, tile_attention


def _vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    options = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 6, "num_classes": 0,
               "dynamic_img_size": True, **kwargs}
    return VisionTransformer(**options).eval()


def _timm_attention(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """The full (B, heads, N, N) matrix timm's unfused path computes (caught at its attention dropout)."""
    attn = vit.blocks[-1].attn
    attn.fused_attn = False
    seen = []
    handle = attn.attn_drop.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        with torch.no_grad():
            vit(x)
    finally:
        handle.remove()
        attn.fused_attn = True
    return seen[0]


@pytest.mark.parametrize("kwargs", [{}, {"reg_tokens": 2}, {"qk_norm": True, "depth": 1}])
def test_the_class_token_row_is_timms_attention_over_the_patch_tokens(kwargs):
    vit = _vit(**kwargs)
    x = torch.randn(3, 3, 32, 40)  # not square: a 4 x 5 grid
    maps = patch_attention(vit, x)
    assert maps.shape == (3, 6, 4, 5)  # one map per head
    reference = _timm_attention(vit, x)[:, :, 0, vit.num_prefix_tokens:].reshape(3, 6, 4, 5)
    torch.testing.assert_close(maps, reference, atol=1e-5, rtol=1e-4)


def test_each_heads_row_sums_to_one_over_all_tokens_and_registers_are_not_on_the_map():
    vit = _vit(reg_tokens=4)
    x = torch.randn(2, 3, 32, 32)
    with last_block_input(vit) as seen, torch.no_grad():
        vit(x)
    row = cls_attention(vit.blocks[-1].attn, seen[0])
    assert row.shape == (2, 6, 1 + 4 + 16)
    torch.testing.assert_close(row.sum(-1), torch.ones(2, 6))
    maps = patch_attention(vit, x)
    assert maps.shape == (2, 6, 4, 4) and bool((maps.sum((-2, -1)) < 1).all())  # the prefix tokens took a share
    assert not vit.blocks[-1].attn._forward_pre_hooks  # the hook is removed again


def test_a_vit_without_a_class_token_is_refused():
    vit = _vit(class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="VisionTransformer has no class-token attention"):
        patch_attention(vit, torch.randn(1, 3, 32, 32))


def _meta(in_chans: int, per_channel: bool) -> CheckpointMeta:
    n = 1 if per_channel else in_chans
    return CheckpointMeta.from_json({"model": {"name": "vit_tiny_patch16_224"}, "in_chans": in_chans, "image_size": 32,
                                     "scale": 255.0, "mean": [0.5] * n, "std": [0.25] * n, "method": "random_init",
                                     "per_channel": per_channel}, "test")


def test_a_channel_agnostic_encoder_gets_one_map_set_per_channel_image():
    vit = _vit(in_chans=1)
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64), dtype=np.uint8))
    maps = tile_attention(vit, tiles, _meta(1, True), torch.device("cpu"))
    assert maps.shape == (2, 3, 6, 4, 4) and maps.dtype == np.float32  # 64 px tiles resized to the 32 px input
    alone = tile_attention(vit, tiles[:, 1:2], _meta(1, True), torch.device("cpu"))  # channel 1 on its own
    np.testing.assert_allclose(maps[:, 1], alone[:, 0], atol=1e-6)
    assert not np.allclose(maps[:, 0], maps[:, 1])
    rgb = tile_attention(_vit(in_chans=3), tiles, _meta(3, False), torch.device("cpu"))
    assert rgb.shape == (2, 1, 6, 4, 4)
