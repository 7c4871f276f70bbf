"""iBOT's patch loss against hand-checked and explicit-loop references, and where its gradient goes."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslray.methods.ibot_loss import ibot_patch_loss


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
