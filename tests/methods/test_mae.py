"""MAE: masking and decoder positions on hand-checked cases; the masked encoder and a tiny run
(the pixel target and the loss are tested in test_mae_loss)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslray.methods import Schedule, build_method
from sslray.methods.mae import (
    MAEConfig,
    num_masked,
    patchify,
    random_keep,
    random_masking,
    sincos_pos_embed_2d,
    unpatchify,
    unshuffle,
)
from sslray.methods.registry import METHODS
from sslray.models.backbones import BackboneConfig, create_backbone


def _backbone(in_chans: int = 2, **kwargs):
    vit = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, **kwargs}
    return create_backbone(BackboneConfig("vit_tiny_patch16_224", vit), in_chans=in_chans)


def _tiny_mae(in_chans: int = 2, backbone_kwargs: dict | None = None, **params):
    cfg = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "view_size": 32, **params}
    return build_method("mae", cfg, _backbone(in_chans, **(backbone_kwargs or {})), Schedule(total_steps=10))


# ---------------------------------------------------------------------------------------
# masking


@pytest.mark.parametrize(("length", "ratio"), [(16, 0.75), (196, 0.75), (10, 0.5), (49, 0.6)])
def test_random_masking_counts_and_kept_tokens(length, ratio):
    torch.manual_seed(0)
    x = torch.randn(3, length, 5)
    kept, mask, ids_restore = random_masking(x, ratio)
    n_mask = round(length * ratio)
    assert mask.dtype == torch.bool and mask.shape == (3, length)
    assert mask.sum(1).tolist() == [n_mask] * 3
    assert kept.shape == (3, length - n_mask, 5)
    for i in range(3):
        # the kept tokens are exactly the unmasked rows (as sets: they come shuffled)
        visible = x[i][~mask[i]]
        assert torch.equal(torch.sort(kept[i], dim=0).values, torch.sort(visible, dim=0).values)
        assert sorted(ids_restore[i].tolist()) == list(range(length))


def test_random_masking_differs_per_sample_and_follows_the_generator():
    x = torch.randn(4, 64, 2)
    _, mask_a, _ = random_masking(x, 0.75, torch.Generator().manual_seed(1))
    _, mask_b, _ = random_masking(x, 0.75, torch.Generator().manual_seed(1))
    assert torch.equal(mask_a, mask_b)
    assert not all(torch.equal(mask_a[0], m) for m in mask_a[1:])


def test_random_keep_indices_are_the_unmasked_patches_and_restore_the_order():
    ids_keep, mask, ids_restore = random_keep(3, 16, 0.75, torch.device("cpu"), torch.Generator().manual_seed(2))
    assert ids_keep.shape == (3, 4)
    for i in range(3):
        assert sorted(ids_keep[i].tolist()) == torch.nonzero(~mask[i]).flatten().tolist()
        shuffled = torch.argsort(ids_restore[i])  # the [kept, removed] order
        assert torch.equal(shuffled[:4], ids_keep[i])


def test_split_out_names_are_still_importable_from_mae():
    from sslray.methods import mae, mae_loss

    assert mae.mae_loss is mae_loss.mae_loss and mae.patchify is mae_loss.patchify
    assert all(hasattr(mae, name) for name in mae.__all__)


def test_num_masked_keeps_both_sides_non_empty():
    assert num_masked(196, 0.75) == 147
    assert num_masked(4, 0.9) == 3  # round(3.6) = 4 would leave the encoder nothing
    assert num_masked(4, 0.05) == 1  # round(0.2) = 0 would leave the loss nothing


def test_unshuffle_restores_visible_tokens_and_fills_the_rest():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 4)
    kept, mask, ids_restore = random_masking(x, 0.5)
    fill = torch.full((4,), -7.0)
    restored = unshuffle(kept, fill, ids_restore)
    assert torch.equal(restored[~mask], x[~mask])
    assert (restored[mask] == -7.0).all()


# ---------------------------------------------------------------------------------------
# decoder positions


def test_sincos_position_embedding():
    emb = sincos_pos_embed_2d(8, (2, 3))
    assert emb.shape == (6, 8)
    # position (0, 0): sines 0, cosines 1 on both axes
    assert emb[0].tolist() == pytest.approx([0, 0, 1, 1, 0, 0, 1, 1])
    # position (1, 2) at the lowest frequency (1): sin(1), cos(1) for the row, sin(2), cos(2) for the column
    assert emb[5, [0, 2, 4, 6]].tolist() == pytest.approx([math.sin(1), math.cos(1), math.sin(2), math.cos(2)])
    assert len({tuple(r) for r in emb.tolist()}) == 6


# ---------------------------------------------------------------------------------------
# config and method


def test_config_validation_names_the_key():
    assert MAEConfig().mask_ratio == 0.75 and MAEConfig().norm_pix_loss
    for bad, key in [({"mask_ratio": 1.0}, "method.mask_ratio"), ({"mask_ratio": 0.0}, "method.mask_ratio"),
                     ({"decoder_dim": 30}, "method.decoder_dim"), ({"decoder_heads": 3}, "method.decoder_heads"),
                     ({"scale": (0.5, 0.2)}, "method.scale"), ({"decoder_depth": 0}, "method.decoder_depth")]:
        with pytest.raises(ValueError, match=key):
            MAEConfig(**bad)


def test_default_augmentation_leaves_intensities_alone():
    aug = MAEConfig().augment
    assert aug.gamma == (1.0, 1.0) and aug.shift == 0.0 and aug.gain == (1.0, 1.0)


def test_non_vit_backbone_is_refused_by_name():
    resnet = create_backbone(BackboneConfig("resnet18"), in_chans=2)
    with pytest.raises(ValueError, match="model.name.*resnet18"):
        build_method("mae", {"decoder_dim": 32, "decoder_heads": 2}, resnet, Schedule(total_steps=10))


def test_view_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="method.view_size"):
        _tiny_mae(view_size=36)


def test_views_forward_shapes_and_features():
    torch.manual_seed(0)
    method = _tiny_mae(in_chans=3)
    assert "mae" in METHODS
    views = method.make_views(torch.rand(4, 3, 48, 48))
    assert len(views) == 1 and views[0].shape == (4, 3, 32, 32)
    out = method(views, step=0)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.metrics["masked_fraction"] == pytest.approx(12 / 16)
    assert out.features.shape == (4, 32) and not out.features.requires_grad
    assert method.encoder() is method.backbone
    assert method.trainable_modules() == [method.backbone, method.decoder]


def test_views_larger_than_the_backbone_img_size():
    """dynamic_img_size: the patch grid comes from the input, not the backbone's img_size."""
    torch.manual_seed(0)
    method = _tiny_mae(view_size=48)
    view = torch.randn(2, 2, 48, 48)
    tokens, mask, ids_restore = method.encode(view)
    assert mask.shape == (2, 36) and tokens.shape == (2, 1 + 36 - 27, 32)
    pred = method.decoder(tokens, ids_restore, 1, (6, 6))
    assert pred.shape == (2, 36, 8 * 8 * 2)
    assert torch.isfinite(method([view], 0).loss)


def test_encoder_sees_only_the_visible_patches():
    torch.manual_seed(0)
    method = _tiny_mae().eval()
    images = torch.randn(2, 2, 32, 32)
    tokens, mask, _ = method.encode(images, torch.Generator().manual_seed(3))
    patches = patchify(images, 8)
    masked_changed = unpatchify(torch.where(mask.unsqueeze(-1), patches + 5.0, patches), 8)
    tokens_m, mask_m, _ = method.encode(masked_changed, torch.Generator().manual_seed(3))
    assert torch.equal(mask, mask_m)
    assert torch.allclose(tokens, tokens_m, atol=1e-6)  # removed patches cannot reach the encoder
    visible_changed = unpatchify(torch.where(mask.unsqueeze(-1), patches, patches + 5.0), 8)
    tokens_v, _, _ = method.encode(visible_changed, torch.Generator().manual_seed(3))
    assert not torch.allclose(tokens, tokens_v, atol=1e-3)


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_every_trainable_parameter_gets_a_gradient(global_pool):
    """DDP (find_unused_parameters=False) needs a gradient on every trainable parameter."""
    torch.manual_seed(0)
    method = _tiny_mae(backbone_kwargs={"global_pool": global_pool})
    method(method.make_views(torch.rand(3, 2, 32, 32)), step=0).loss.backward()
    params = [(n, p) for m in method.trainable_modules() for n, p in m.named_parameters()]
    missing = [n for n, p in params if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    assert method.decoder.mask_token.grad.abs().sum() > 0 and method.backbone.cls_token.grad.abs().sum() > 0


def test_tiny_model_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    method = _tiny_mae(scale=(0.5, 1.0))
    # smooth images: masked patches are predictable from their visible neighbours
    images = F.interpolate(torch.rand(4, 2, 4, 4), size=(48, 48), mode="bilinear", align_corners=False)
    params = [p for m in method.trainable_modules() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)

    def fixed_loss() -> float:
        state = torch.get_rng_state()
        torch.manual_seed(123)  # the same views and masks before and after training
        with torch.no_grad():
            loss = method(method.make_views(images), step=0).loss.item()
        torch.set_rng_state(state)
        return loss

    initial = fixed_loss()
    for step in range(40):
        loss = method(method.make_views(images), step).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = fixed_loss()
    assert final < initial * 0.9, (initial, final)
