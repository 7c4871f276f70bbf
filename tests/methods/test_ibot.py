"""iBOT: the masked ViT forward, config and backbone checks, gradients, schedules, EMA, and a
tiny model that learns (the patch loss and the masks are tested in test_ibot_loss and
test_patch_masks)."""

import math

import pytest
import torch

from sslray.config import ConfigError
from sslray.methods import Schedule, build_method, method_config
from sslray.methods.dino import dino_loss
from sslray.methods.ibot import (
    IBOT,
    IBOTConfig,
    patch_grid,
    vit_tokens,
)
from sslray.models.backbones import BackboneConfig, create_backbone

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _backbone(**kwargs):
    return create_backbone(BackboneConfig("vit_tiny_patch16_224", {**TINY_VIT, **kwargs}), in_chans=2)


def _tiny_ibot(backbone=None, **params) -> IBOT:
    cfg = {"out_dim": 64, "patch_out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
           "views": {"global_size": 32, "local_size": 16, "n_local": 2}, **params}
    return build_method("ibot", cfg, backbone or _backbone(), Schedule(total_steps=10, steps_per_epoch=2))


# --- the masked ViT forward -------------------------------------------------------------


def test_vit_tokens_without_mask_is_forward_features():
    torch.manual_seed(0)
    model = _backbone().eval()
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        assert torch.allclose(vit_tokens(model, x), model.forward_features(x), atol=1e-6)
        # a non-square crop: the grid follows the input
        assert vit_tokens(model, torch.randn(1, 2, 24, 40)).shape == (1, 1 + 3 * 5, 32)
    assert patch_grid(model, (24, 40)) == (3, 5)


def test_masked_patches_hide_their_content_but_keep_their_place():
    torch.manual_seed(0)
    method = _tiny_ibot()
    model = method.backbone.eval()
    with torch.no_grad():
        method.mask_token.weight.normal_()
    x = torch.randn(1, 2, 32, 32)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 5] = True  # patch (row 1, col 1): pixels 8:16, 8:16
    y = x.clone()
    y[..., 8:16, 8:16] += 5.0
    with torch.no_grad():
        masked_x = vit_tokens(model, x, mask, method.mask_token)
        masked_y = vit_tokens(model, y, mask, method.mask_token)
        assert torch.allclose(masked_x, masked_y, atol=1e-6)  # the student cannot see a masked patch
        assert not torch.allclose(vit_tokens(model, x), vit_tokens(model, y))
        other = torch.zeros(1, 16, dtype=torch.bool)
        other[0, 10] = True  # the same token at another position gives other outputs
        assert not torch.allclose(masked_x, vit_tokens(model, x, other, method.mask_token))


# --- config and backbone checks ---------------------------------------------------------


def test_split_out_names_are_still_importable_from_ibot():
    from sslray.methods import ibot, ibot_loss, patch_masks

    assert ibot.ibot_patch_loss is ibot_loss.ibot_patch_loss and ibot.block_mask is patch_masks.block_mask
    assert all(hasattr(ibot, name) for name in ibot.__all__)


def test_config_defaults_follow_the_ibot_vitb_recipe():
    cfg = IBOTConfig()
    assert (cfg.out_dim, cfg.patch_out_dim, cfg.teacher_momentum) == (8192, 8192, 0.996)
    assert (cfg.warmup_teacher_temp, cfg.teacher_temp) == (0.04, 0.04)
    assert (cfg.warmup_teacher_patch_temp, cfg.teacher_patch_temp) == (0.04, 0.07)
    assert (cfg.mask_ratio, cfg.mask_prob, cfg.lambda1, cfg.lambda2) == ((0.1, 0.5), 0.5, 1.0, 1.0)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"patch_out_dim": 128}, "method.patch_out_dim"),
        ({"mask_ratio": [0.5, 0.2]}, "method.mask_ratio"),
        ({"mask_prob": 1.5}, "method.mask_prob"),
        ({"lambda1": 0.0, "lambda2": 0.0}, "method.lambda1"),
        ({"mask_shape": "ring"}, "method.mask_shape"),
    ],
)
def test_config_errors_name_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        method_config("ibot", {"out_dim": 64, "patch_out_dim": 64, **params})


def test_non_vit_backbones_are_refused_by_name():
    resnet = create_backbone(BackboneConfig("resnet18"), in_chans=2)
    with pytest.raises(ValueError, match=r"model\.name.*resnet18"):
        _tiny_ibot(resnet)
    with pytest.raises(ValueError, match=r"model\.name.*global_pool='avg'"):
        _tiny_ibot(_backbone(global_pool="avg"))
    with pytest.raises(ValueError, match="patch_drop_rate"):
        _tiny_ibot(_backbone(patch_drop_rate=0.25))


# --- the method -------------------------------------------------------------------------


def test_forward_shapes_metrics_and_loss_weights():
    torch.manual_seed(0)
    method = _tiny_ibot(lambda2=0.5)
    views = method.make_views(torch.rand(3, 2, 40, 40))
    assert [tuple(v.shape) for v in views] == [(3, 2, 32, 32)] * 2 + [(3, 2, 16, 16)] * 2
    out = method(views, step=0)
    m = out.metrics
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(m["cls_loss"] + 0.5 * m["patch_loss"], rel=1e-5)
    assert out.features.shape == (3, 32) and not out.features.requires_grad
    assert m["teacher_temp"] == pytest.approx(0.04) and m["teacher_patch_temp"] == pytest.approx(0.04)


def test_cls_term_is_dino_loss_of_teacher_vs_student_views():
    """With no masking the student and teacher see the same globals: the CLS term is dino_loss
    on the heads' outputs, and the encoder's pooled output is the teacher's class token."""
    torch.manual_seed(0)
    method = _tiny_ibot(mask_prob=0.0, lambda2=0.0, use_bn=False)
    method.eval()
    views = method.make_views(torch.rand(2, 2, 32, 32))
    out = method(views, step=0)
    with torch.no_grad():
        student = [method.head(method.backbone(v)) for v in views]
        teacher = [method.teacher_head(method.teacher_backbone(v)) for v in views[:2]]
        expected = dino_loss(student, teacher, torch.zeros(1, 64), 0.1, 0.04)
        tokens = method.teacher_backbone.forward_features(views[0])
        assert torch.allclose(method.encoder()(views[0]), tokens[:, 0], atol=1e-6)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.metrics["patch_loss"] == 0.0 and out.metrics["masked_fraction"] == 0.0


def test_gradients_reach_the_student_and_mask_token_only():
    torch.manual_seed(0)
    method = _tiny_ibot(mask_prob=1.0, shared_head=False, patch_out_dim=48, norm_last_layer=False)
    method(method.make_views(torch.rand(2, 2, 32, 32)), step=0).loss.backward()
    for module in method.trainable_modules():
        for name, p in module.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert method.mask_token.weight.grad.abs().sum() > 0
    assert method.patch_prototypes.last_layer.weight.grad.abs().sum() > 0
    teacher = [method.teacher_backbone, method.teacher_head, method.teacher_patch_prototypes]
    assert all(p.grad is None and not p.requires_grad for t in teacher for p in t.parameters())


def test_mask_token_stays_in_the_graph_when_nothing_is_masked():
    """DDP needs every trainable parameter to get a gradient every step."""
    torch.manual_seed(0)
    method = _tiny_ibot(mask_prob=0.0)
    method(method.make_views(torch.rand(2, 2, 32, 32)), step=0).loss.backward()
    assert method.mask_token.weight.grad is not None


def test_last_layers_frozen_for_the_first_epochs_then_trained():
    method = _tiny_ibot(freeze_last_layer_epochs=1, shared_head=False, mask_prob=1.0)  # frozen: steps 0, 1
    for step, frozen in ((0, True), (1, True), (2, False)):
        torch.manual_seed(step)
        method(method.make_views(torch.rand(2, 2, 32, 32)), step).loss.backward()
        method.before_optimizer_step(step)
        assert (method.head.last_layer.weight.grad is None) == frozen
        assert (method.patch_prototypes.last_layer.weight.grad is None) == frozen
        assert method.head.mlp[0].weight.grad is not None
        method.zero_grad(set_to_none=True)


def test_temperature_schedules():
    method = _tiny_ibot(warmup_teacher_temp_epochs=2, warmup_teacher_temp=0.02)  # 4 warm-up steps
    views = method.make_views(torch.rand(2, 2, 32, 32))
    with torch.no_grad():
        mid, end = method(views, 2).metrics, method(views, 4).metrics
    assert mid["teacher_temp"] == pytest.approx(0.03) and mid["teacher_patch_temp"] == pytest.approx(0.055)
    assert end["teacher_temp"] == pytest.approx(0.04) and end["teacher_patch_temp"] == pytest.approx(0.07)


def test_centres_are_emas_of_teacher_outputs():
    torch.manual_seed(0)
    method = _tiny_ibot(center_momentum=0.5, patch_center_momentum=0.25)
    views = method.make_views(torch.rand(2, 2, 32, 32))
    with torch.no_grad():
        method(views, 0)
        globals_ = torch.cat(views[:2])
        tokens = vit_tokens(method.teacher_backbone, globals_)
        logits = method.teacher_head(tokens)  # shared head: the same prototypes for every token
    assert torch.allclose(method.center, 0.5 * logits[:, 0].mean(0, keepdim=True), atol=1e-5)
    assert torch.allclose(method.patch_center, 0.75 * logits[:, 1:].mean((0, 1))[None], atol=1e-5)


def test_teacher_follows_the_student_by_ema_only():
    method = _tiny_ibot(teacher_momentum=0.5, shared_head=False)
    students = [method.backbone, method.head, method.patch_prototypes]
    teachers = [method.teacher_backbone, method.teacher_head, method.teacher_patch_prototypes]
    before = [[p.clone() for p in t.parameters()] for t in teachers]
    with torch.no_grad():
        for s in students:
            for p in s.parameters():
                p.add_(1.0)
    method.after_optimizer_step(0)
    for t, b in zip(teachers, before):
        assert all(torch.allclose(a, old + 0.5) for a, old in zip(t.parameters(), b))
    assert method.encoder() is method.teacher_backbone


def test_teacher_backbone_runs_without_stochastic_depth():
    method = _tiny_ibot(backbone=_backbone(drop_path_rate=0.5))
    method.train()
    assert method.backbone.training and not method.teacher_backbone.training
    assert method.teacher_head.training  # head BatchNorm, when used, keeps batch statistics as in DINO


def test_tiny_model_loss_decreases_on_a_fixed_batch():
    """The student learns to match the (EMA, default momentum) teacher on both terms.

    The centres are settled first by forward passes without updates: at initialisation a
    random ViT maps every image to nearly the same output, so before centring the targets
    are one shared one-hot that the identical student matches trivially, and the loss then
    *rises* as centring spreads them. From settled centres the loss must fall.
    """
    torch.manual_seed(0)
    method = _tiny_ibot(freeze_last_layer_epochs=0, mask_prob=1.0, center_momentum=0.5, patch_center_momentum=0.5)
    images = torch.rand(8, 2, 32, 32)
    with torch.no_grad():
        for _ in range(10):
            method(method.make_views(images), 0)
    params = [p for m in method.trainable_modules() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    losses, patch_losses = [], []
    for step in range(30):
        out = method(method.make_views(images), step)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        method.before_optimizer_step(step)
        optimizer.step()
        method.after_optimizer_step(step)
        losses.append(out.loss.item())
        patch_losses.append(out.metrics["patch_loss"])
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert sum(patch_losses[-5:]) < sum(patch_losses[:5])  # the masked-patch objective is learnt too
