"""TransMIL's parts: the square layout, PPEG, the masked Nyström attention and the class-token attention."""

from __future__ import annotations

import pytest
import torch

from sslray.evaluate.mil_heads import build_head, masked_softmax
from sslray.evaluate.transmil import (
    PPEG,
    NystromAttention,
    TransMIL,
    iterative_pinv,
    segment_means,
    square_layout,
)

DIM = 16


def padded(bags: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(b) for b in bags)
    x = torch.full((len(bags), longest, DIM), 50.0)
    mask = torch.zeros(len(bags), longest, dtype=torch.bool)
    for i, bag in enumerate(bags):
        x[i, : len(bag)], mask[i, : len(bag)] = bag, True
    return x, mask


def exact_attention(attn: NystromAttention, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """The softmax attention Nyström approximates, with the same projections."""
    q, k, v = attn._qkv(x)
    weights = masked_softmax(q @ k.transpose(-1, -2), ~pad[:, None, None, :], dim=-1)
    return attn.out((weights @ v).transpose(1, 2).flatten(2))


def test_a_bag_is_made_square_by_repeating_its_first_tiles():
    mask = torch.tensor([[True] * 5 + [False] * 4, [True] * 9])
    index, used, grid = square_layout(mask)
    assert grid == 3
    assert index[0].tolist()[:9] == [0, 1, 2, 3, 4, 0, 1, 2, 3] and used[0].all()
    assert index[1].tolist() == list(range(9))


def test_a_short_bag_fills_the_top_left_corner_of_the_batch_grid():
    mask = torch.tensor([[True] * 2 + [False] * 8, [True] * 10])
    index, used, grid = square_layout(mask)
    assert grid == 4
    assert used[0].view(4, 4)[:2, :2].all() and used[0].sum() == 4
    assert index[0].view(4, 4)[:2, :2].flatten().tolist() == [0, 1, 0, 1]


def test_the_layout_skips_padding_wherever_it_is():
    mask = torch.tensor([[False, True, False, True, True]])
    index, used, _ = square_layout(mask)
    assert index[0][used[0]].tolist() == [1, 3, 4, 1]


def test_ppeg_adds_the_convolutions_to_the_grid_and_keeps_the_class_token():
    ppeg = PPEG(4)
    tokens, used = torch.randn(1, 10, 4), torch.ones(1, 9, dtype=torch.bool)
    out = ppeg(tokens, used, 3)
    assert torch.equal(out[:, 0], tokens[:, 0])
    for conv in ppeg.convs:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    torch.testing.assert_close(ppeg(tokens, used, 3), tokens)


def test_ppeg_sees_zeros_outside_a_bags_square():
    ppeg = PPEG(4)
    tokens, used = torch.randn(1, 17, 4), torch.zeros(1, 16, dtype=torch.bool)
    used[0, [0, 1, 4, 5]] = True
    garbage = tokens.clone()
    garbage[0, 1:][~used[0]] = 1e3
    torch.testing.assert_close(ppeg(garbage, used, 4)[0, 1:][used[0]], ppeg(tokens, used, 4)[0, 1:][used[0]])


def test_every_token_is_its_own_landmark_when_there_are_enough():
    t = torch.randn(1, 2, 6, 3)
    keep = torch.tensor([[True, True, False, True, False, True]])
    means, exists = segment_means(t, keep, landmarks=8)
    assert exists.tolist() == [[True] * 4]
    torch.testing.assert_close(means, t[:, :, keep[0]])


def test_landmarks_are_means_of_consecutive_real_tokens():
    t = torch.arange(6.0).view(1, 1, 6, 1)
    means, exists = segment_means(t, torch.ones(1, 6, dtype=torch.bool), landmarks=3)
    assert exists.all() and means.flatten().tolist() == [0.5, 2.5, 4.5]


def test_iterative_pinv_inverts_a_well_conditioned_matrix():
    a = torch.eye(5) + 0.1 * torch.rand(5, 5)
    torch.testing.assert_close(iterative_pinv(a, 10) @ a, torch.eye(5), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("iterations", "tolerance"), [(6, 0.05), (12, 1e-3)])
def test_nystrom_matches_exact_attention_when_landmarks_cover_the_sequence(iterations, tolerance):
    torch.manual_seed(0)
    attn = NystromAttention(32, heads=4, landmarks=32, pinv_iterations=iterations)
    x, pad = torch.randn(2, 24, 32), torch.zeros(2, 24, dtype=torch.bool)
    pad[0, 10:] = True
    with torch.no_grad():
        approx, exact = attn(x, pad), exact_attention(attn, x, pad)
    error = (approx - exact)[~pad].abs().max() / exact[~pad].abs().max()
    assert error < tolerance


def test_nystrom_with_few_landmarks_ignores_padding():
    torch.manual_seed(0)
    attn = NystromAttention(32, heads=4, landmarks=4)
    x, pad = torch.randn(2, 30, 32), torch.zeros(2, 30, dtype=torch.bool)
    pad[0, 13:] = True
    with torch.no_grad():
        together, alone = attn(x, pad)[0, :13], attn(x[:1, :13], pad[:1, :13])[0]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [{}, {"nystrom": True, "landmarks": 4}, {"mlp_ratio": 0}])
def test_transmil_ignores_padding(options):
    torch.manual_seed(0)
    head = build_head("transmil", DIM, 2, dim=32, heads=4, **options).eval()
    bags = [torch.randn(n, DIM) for n in (1, 3, 11, 26)]
    x, mask = padded(bags)
    with torch.no_grad():
        together = head(x, mask)
        alone = torch.cat([head(bag[None], None) for bag in bags])
        weights = head.attention(x, mask)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(1), torch.ones(4))
    assert torch.all(weights[~mask] == 0)


def test_transmil_attention_sums_the_copies_of_a_repeated_tile():
    torch.manual_seed(0)
    head = TransMIL(DIM, 1, dim=32, heads=4).eval()
    x = torch.randn(1, 2, DIM)  # a 2 x 2 square: each tile twice
    mask = torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        tokens, pad, index = head._before_last(x, mask)
        to_cells = head.layer2.cls_weights(tokens, pad)[0, 1:]
        weights = head.attention(x, mask)[0]
    assert index[0].tolist() == [0, 1, 0, 1]
    expected = torch.stack([to_cells[[0, 2]].sum(), to_cells[[1, 3]].sum()])
    torch.testing.assert_close(weights, expected / expected.sum())


def test_transmil_defaults_follow_the_protocol():
    head = TransMIL(DIM, 1)
    assert head.embed[0].out_features == 512
    assert head.layer1.attn.mha.num_heads == 8
    assert head.layer1.mlp[1][0].out_features == 4 * 512
    assert [conv.kernel_size for conv in head.ppeg.convs] == [(7, 7), (5, 5), (3, 3)]
    assert isinstance(TransMIL(DIM, 1, nystrom=True).layer2.attn, NystromAttention)
