"""iBOT: the patch loss against hand-checked and loop references, masks, the masked ViT
forward, gradients, schedules, EMA, and a tiny model that learns."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from sslray.config import ConfigError
from sslray.methods import Schedule, build_method, method_config
from sslray.methods.dino import dino_loss
from sslray.methods.ibot import (
    IBOT,
    IBOTConfig,
    block_mask,
    ibot_masks,
    ibot_patch_loss,
    patch_grid,
    random_mask,
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


# --- the patch loss ---------------------------------------------------------------------


def test_patch_loss_hand_checked():
    ln3 = math.log(3)
    # one view, two images of two patches, two prototypes; temperatures 1, centre 0
    teacher = [torch.tensor([[[ln3, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])]  # (.75,.25), (.5,.5)
    student = [torch.tensor([[[0.0, 0.0], [0.0, ln3]], [[0.0, 0.0], [0.0, 0.0]]])]
    masks = [torch.tensor([[True, False], [False, False]])]  # image 2 has nothing masked
    loss = ibot_patch_loss(student, teacher, masks, torch.zeros(1, 2), student_temp=1.0, teacher_temp=1.0)
    # image 1: only patch 0 counts, CE((.75,.25), (.5,.5)) = ln 2; image 2 contributes 0 but is counted
    assert loss.item() == pytest.approx(math.log(2) / 2, abs=1e-6)

    masks = [torch.tensor([[True, True], [False, False]])]
    loss = ibot_patch_loss(student, teacher, masks, torch.zeros(1, 2), 1.0, 1.0)
    ce_half_vs_quarter = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert loss.item() == pytest.approx((math.log(2) + ce_half_vs_quarter) / 2 / 2, abs=1e-6)


def test_patch_loss_matches_an_explicit_loop():
    torch.manual_seed(0)
    n_views, b, n_patch, k = 2, 3, 5, 7
    student = [torch.randn(b, n_patch, k) for _ in range(n_views)]
    teacher = [torch.randn(b, n_patch, k) for _ in range(n_views)]
    masks = [torch.rand(b, n_patch) < 0.4 for _ in range(n_views)]
    masks[0][1] = False  # an unmasked image
    center, s_temp, t_temp = torch.randn(1, k) * 0.1, 0.1, 0.07
    ours = ibot_patch_loss(student, teacher, masks, center, s_temp, t_temp)

    view_losses = []
    for s, t, m in zip(student, teacher, masks):
        image_losses = []
        for i in range(b):
            terms = [F.cross_entropy(s[i, j] / s_temp, F.softmax((t[i, j] - center[0]) / t_temp, dim=-1))
                     for j in range(n_patch) if m[i, j]]
            image_losses.append(sum(terms) / len(terms) if terms else torch.tensor(0.0))
        view_losses.append(sum(image_losses) / b)
    assert ours.item() == pytest.approx((sum(view_losses) / n_views).item(), rel=1e-5)


def test_patch_loss_gradient_reaches_masked_student_patches_only():
    student = [torch.randn(2, 4, 8, requires_grad=True)]
    teacher = [torch.randn(2, 4, 8, requires_grad=True)]
    masks = [torch.tensor([[True, False, True, False], [False, False, False, False]])]
    ibot_patch_loss(student, teacher, masks, torch.zeros(1, 8), 0.1, 0.04).backward()
    grad_norm = student[0].grad.abs().sum(-1)
    assert (grad_norm[masks[0]] > 0).all() and (grad_norm[~masks[0]] == 0).all()
    assert teacher[0].grad is None


# --- masks ------------------------------------------------------------------------------


def test_block_mask_masks_at_most_the_target_in_blocks():
    rng = random.Random(0)
    for target in (1, 20, 58, 98):
        mask = block_mask((14, 14), target, rng)
        assert mask.shape == (14, 14) and 0 < mask.sum() <= target
    # blocks: far fewer masked-unmasked borders than scattered patches of the same count
    mask = block_mask((14, 14), 58, random.Random(1))
    scattered = random_mask((14, 14), int(mask.sum()), random.Random(1))

    def borders(m):
        return int((m[1:] != m[:-1]).sum() + (m[:, 1:] != m[:, :-1]).sum())

    assert borders(mask) < borders(scattered) / 2


def test_random_mask_is_exact():
    assert random_mask((4, 5), 7, random.Random(0)).sum() == 7


def test_ibot_masks_probability_and_ratio():
    torch.manual_seed(0)
    assert not ibot_masks(16, (4, 4), (0.1, 0.5), prob=0.0).any()
    masks = ibot_masks(64, (14, 14), (0.1, 0.5), prob=1.0, shape="random")
    counts = masks.sum(1)
    assert masks.shape == (64, 196) and masks.dtype == torch.bool
    assert (counts >= int(0.1 * 196)).all() and (counts <= int(0.5 * 196)).all()
    half = ibot_masks(400, (4, 4), (0.25, 0.5), prob=0.5)
    assert 0.35 < half.any(1).float().mean().item() < 0.65
    torch.manual_seed(3)
    again = ibot_masks(8, (6, 6), (0.1, 0.5), prob=0.5)
    torch.manual_seed(3)
    assert torch.equal(again, ibot_masks(8, (6, 6), (0.1, 0.5), prob=0.5))


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
