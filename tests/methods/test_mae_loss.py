"""MAE's pixel target and loss: patch layout, round trips, normalisation, the masked MSE."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslray.methods.mae_loss import mae_loss, normalize_patches, patchify, unpatchify


def test_patchify_hand_checked_single_channel():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = patchify(image, 2)
    assert patches.shape == (1, 4, 4)
    # row-major grid of 2x2 patches, each flattened row by row
    assert patches[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_patchify_puts_channels_last_within_a_patch():
    image = torch.stack([torch.arange(4.0).reshape(2, 2), 10 + torch.arange(4.0).reshape(2, 2)]).unsqueeze(0)
    # one 2x2 patch of 2 channels: (row, column, channel) order
    assert patchify(image, 2)[0, 0].tolist() == [0, 10, 1, 11, 2, 12, 3, 13]


def test_patchify_unpatchify_round_trip_square_and_rectangular():
    torch.manual_seed(0)
    square = torch.randn(2, 3, 16, 16)
    assert torch.equal(unpatchify(patchify(square, 4), 4), square)
    wide = torch.randn(2, 5, 8, 24)
    patches = patchify(wide, 4)
    assert patches.shape == (2, 2 * 6, 4 * 4 * 5)
    assert torch.equal(unpatchify(patches, 4, grid=(2, 6)), wide)


def test_patchify_refuses_sizes_not_divisible_by_the_patch():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(torch.zeros(1, 1, 10, 8), 4)


def test_mae_loss_hand_checked_without_norm_pix():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 3.0], [2.0, 2.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])  # the third patch is visible: not in the loss
    # patch 1: (1 + 9) / 2 = 5, patch 2: (4 + 4) / 2 = 4, mean over masked patches = 4.5
    assert mae_loss(pred, target, mask, norm_pix=False).item() == pytest.approx(4.5)


def test_mae_loss_hand_checked_with_norm_pix():
    # patch (1, 2, 3): mean 2, unbiased variance 1 -> target (-1, 0, 1) / sqrt(1 + 1e-6)
    target = torch.tensor([[[1.0, 2.0, 3.0]]])
    loss = mae_loss(torch.zeros(1, 1, 3), target, torch.tensor([[True]]), norm_pix=True)
    assert loss.item() == pytest.approx(2 / 3 / (1 + 1e-6), rel=1e-6)


def test_normalised_patches_have_mean_zero_and_unit_std():
    torch.manual_seed(0)
    target = normalize_patches(torch.rand(2, 5, 48) * 7 + 3)
    assert torch.allclose(target.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(target.std(-1), torch.ones(2, 5), atol=1e-5)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_loss_matches_a_direct_loop(norm_pix):
    torch.manual_seed(0)
    b, length, p = 3, 7, 12
    pred, target = torch.randn(b, length, p), torch.randn(b, length, p) * 2 + 1
    mask = torch.rand(b, length) < 0.6
    mask[0, 0] = True
    terms = []
    for i in range(b):
        for j in range(length):
            if mask[i, j]:
                t = target[i, j]
                if norm_pix:
                    t = (t - t.mean()) / math.sqrt(float(t.var(unbiased=True)) + 1e-6)
                terms.append(F.mse_loss(pred[i, j], t).item())
    expected = sum(terms) / len(terms)
    assert mae_loss(pred, target, mask, norm_pix).item() == pytest.approx(expected, rel=1e-5)
    assert mae_loss(pred, target, mask.float(), norm_pix).item() == pytest.approx(expected, rel=1e-5)


def test_mae_loss_ignores_predictions_on_visible_patches_and_grads_pred_only():
    torch.manual_seed(0)
    pred = torch.randn(2, 6, 4, requires_grad=True)
    target = torch.randn(2, 6, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, False, False, True]] * 2)
    loss = mae_loss(pred, target, mask, norm_pix=True)
    changed = pred.detach().clone()
    changed[~mask] += 100.0
    assert mae_loss(changed, target, mask, norm_pix=True).item() == pytest.approx(loss.item())
    loss.backward()
    assert (pred.grad[~mask] == 0).all() and (pred.grad[mask].abs().sum(-1) > 0).all()
