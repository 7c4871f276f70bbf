"""DINO loss, centering, EMA and schedules on hand-checked cases, plus a reference check."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslray.methods import METHODS, Schedule, build_method
from sslray.methods.dino import (
    DINOConfig,
    DINOHead,
    cosine_momentum,
    dino_loss,
    ema_update,
    teacher_temperature,
    update_center,
)
from sslray.models.backbones import BackboneConfig, create_backbone


def test_dino_loss_hand_checked():
    ln3 = math.log(3)
    teacher = [torch.tensor([[0.0, 0.0]]), torch.tensor([[ln3, 0.0]])]  # probs (.5,.5) and (.75,.25)
    student = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, ln3]]), torch.tensor([[ln3, 0.0]])]
    loss = dino_loss(student, teacher, torch.zeros(1, 2), student_temp=1.0, teacher_temp=1.0)
    ce_half_vs_quarter = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    entropy_quarter = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    # pairs (t1,s2) (t1,s3) (t2,s1) (t2,s3); a teacher view is never paired with itself
    expected = (2 * ce_half_vs_quarter + math.log(2) + entropy_quarter) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_dino_loss_matches_soft_target_cross_entropy():
    torch.manual_seed(0)
    teacher = [torch.randn(5, 16) for _ in range(2)]
    student = [torch.randn(5, 16) for _ in range(4)]
    center = torch.randn(1, 16) * 0.1
    ours = dino_loss(student, teacher, center, 0.1, 0.04)
    pairs = [
        F.cross_entropy(s / 0.1, F.softmax((t - center) / 0.04, dim=-1))
        for i, t in enumerate(teacher)
        for j, s in enumerate(student)
        if i != j
    ]
    assert ours.item() == pytest.approx(torch.stack(pairs).mean().item(), rel=1e-5)


def test_dino_loss_gradient_reaches_student_only():
    student = [torch.randn(3, 8, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(3, 8, requires_grad=True) for _ in range(2)]
    dino_loss(student, teacher, torch.zeros(1, 8), 0.1, 0.04).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def test_center_is_an_ema_of_the_teacher_batch_mean():
    center = update_center(torch.zeros(1, 2), [torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, 5.0]])], 0.9)
    assert center[0].tolist() == pytest.approx([0.2, 0.4])


def test_ema_update():
    teacher, student = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    teacher.weight.data.fill_(1.0)
    student.weight.data.fill_(3.0)
    ema_update(teacher, student, 0.9)
    assert teacher.weight.item() == pytest.approx(1.2)


def test_schedules():
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert teacher_temperature(0, 10, 0.01, 0.04) == pytest.approx(0.01)
    assert teacher_temperature(5, 10, 0.01, 0.04) == pytest.approx(0.025)
    assert teacher_temperature(50, 10, 0.01, 0.04) == pytest.approx(0.04)


def test_head_output_is_bounded_cosine_logits():
    head = DINOHead(32, DINOConfig(out_dim=64, hidden_dim=16, bottleneck_dim=8))
    out = head(torch.randn(4, 32))
    assert out.shape == (4, 64) and out.abs().max() <= 1.0 + 1e-5
    assert not head.gain.requires_grad  # norm_last_layer fixes the prototype norm


def _tiny_dino(**params):
    backbone = create_backbone(
        BackboneConfig("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                                                "num_heads": 2}), in_chans=2)
    cfg = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
           "views": {"global_size": 32, "local_size": 16, "n_local": 2}, **params}
    return build_method("dino", cfg, backbone, Schedule(total_steps=10, steps_per_epoch=2))


def test_views_and_forward_shapes():
    method = _tiny_dino()
    views = method.make_views(torch.rand(3, 2, 48, 48))
    assert [tuple(v.shape) for v in views] == [(3, 2, 32, 32)] * 2 + [(3, 2, 16, 16)] * 2
    out = method(views, step=0)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and "teacher_temp" in out.metrics


def test_last_layer_frozen_for_the_first_epochs_then_trained():
    method = _tiny_dino(freeze_last_layer_epochs=1)  # 2 steps per epoch -> frozen for steps 0, 1
    for step, frozen in ((0, True), (1, True), (2, False)):
        method(method.make_views(torch.rand(2, 2, 32, 32)), step).loss.backward()
        method.before_optimizer_step(step)
        assert (method.head.last_layer.weight.grad is None) == frozen
        method.zero_grad(set_to_none=True)


def test_teacher_follows_student_by_ema_only():
    method = _tiny_dino(teacher_momentum=0.5)
    before = [p.clone() for p in method.teacher_backbone.parameters()]
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    method.after_optimizer_step(0)
    after = list(method.teacher_backbone.parameters())
    assert all(torch.allclose(a, b + 0.5) for a, b in zip(after, before))
    assert method.encoder() is method.teacher_backbone


def test_registry_lists_dino_and_refuses_duplicates():
    from sslray.methods.registry import register_method

    assert "dino" in METHODS
    with pytest.raises(KeyError, match="already registered"):
        register_method("dino")(type("Again", (), {}))


def test_method_modules_do_not_import_ray():
    """Methods are pure torch: the Ray layer must not leak into them (docs/architecture.md)."""
    import subprocess
    import sys

    code = "import sys, sslray.methods, sslray.train.loop, sslray.train.checkpoint; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
