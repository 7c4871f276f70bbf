"""Every registered MIL head: shapes, padding and permutation invariance, attention, gradients, a toy task."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslray.evaluate.mil_heads import MIL_HEADS, build_head, extreme_scores, heads, masked_softmax

NAMES = heads().names()
# Small widths keep the whole module in seconds on 2 cores.
SMALL = {"transmil": {"dim": 64}}
SOFTMAX_HEADS = {"mean_pool", "abmil", "dsmil", "transmil"}
DIM = 16


def make(name: str, n_outputs: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_head(name, DIM, n_outputs, **SMALL.get(name, {}))


def padded(bags: list[torch.Tensor], garbage: float = 1e3) -> tuple[torch.Tensor, torch.Tensor]:
    """Bags padded to the longest with large values, which must never reach an output."""
    longest = max(len(b) for b in bags)
    x = torch.full((len(bags), longest, bags[0].shape[1]), garbage)
    mask = torch.zeros(len(bags), longest, dtype=torch.bool)
    for i, bag in enumerate(bags):
        x[i, : len(bag)], mask[i, : len(bag)] = bag, True
    return x, mask


def toy_bags(n_bags: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bags of 8-40 Gaussian tiles; a positive bag holds 1-3 tiles shifted along one fixed direction.

    The shift is large enough that even mean pooling separates the bags (its bag mean moves
    by at least 16/40 along the direction); the attention heads need far fewer steps.
    """
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(DIM, generator=gen), dim=0)
    bags, labels = [], []
    for i in range(n_bags):
        bag = torch.randn(int(torch.randint(8, 41, (1,), generator=gen)), DIM, generator=gen)
        if i % 2:
            hits = torch.randperm(len(bag), generator=gen)[: int(torch.randint(1, 4, (1,), generator=gen))]
            bag[hits] += 16.0 * direction
        bags.append(bag)
        labels.append(float(i % 2))
    x, mask = padded(bags, garbage=0.0)
    return x, mask, torch.tensor(labels)


def test_every_documented_head_is_registered():
    assert NAMES == ["abmil", "chowder", "dsmil", "mean_pool", "transmil"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_logits_have_one_column_per_output(name, n_outputs):
    x, mask = padded([torch.randn(5, DIM), torch.randn(12, DIM)])
    assert make(name, n_outputs).eval()(x, mask).shape == (2, n_outputs)


@pytest.mark.parametrize("name", NAMES)
def test_padding_never_changes_a_bags_logits(name):
    head = make(name, 3).eval()
    short, long = torch.randn(7, DIM), torch.randn(30, DIM)
    x, mask = padded([short, long])
    with torch.no_grad():
        together = head(x, mask)
        alone = torch.cat([head(short[None], None), head(long[None], None)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "transmil"])
def test_tile_order_does_not_matter(name):
    head = make(name, 3).eval()
    bag = torch.randn(17, DIM)
    order = torch.randperm(17, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(head(bag[None], None), head(bag[order][None], None), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_attention_is_per_tile_and_zero_at_padding(name):
    x, mask = padded([torch.randn(6, DIM), torch.randn(20, DIM)])
    with torch.no_grad():
        weights = make(name).eval().attention(x, mask)
    assert weights.shape == (2, 20)
    assert torch.all(weights[0, 6:] == 0)
    assert weights[0, :6].abs().sum() > 0
    if name in SOFTMAX_HEADS:
        assert torch.all(weights >= 0)
        torch.testing.assert_close(weights.sum(1), torch.ones(2))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    head = make(name, 3).train()
    x, mask = padded([torch.randn(6, DIM), torch.randn(20, DIM)])
    (head(x, mask) * torch.randn(2, 3)).sum().backward()
    dead = [n for n, p in head.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead


def train_accuracy(head: nn.Module, x: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return ((head.eval()(x, mask)[:, 0] > 0).float() == labels).float().mean().item()


@pytest.mark.parametrize("name", NAMES)
def test_each_head_learns_a_toy_mil_task(name):
    """Adam until 0.9 train accuracy (checked every 10 steps), at most 300 steps."""
    x, mask, labels = toy_bags()
    head = make(name)
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for step in range(300):
        loss = nn.functional.binary_cross_entropy_with_logits(head.train()(x, mask)[:, 0], labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 9 and (accuracy := train_accuracy(head, x, mask, labels)) >= 0.9:
            break
    assert accuracy >= 0.9, f"{name}: train accuracy {accuracy:.2f} after {step + 1} steps, loss {loss.item():.3f}"


def test_a_taken_name_cannot_be_registered_again():
    with pytest.raises(KeyError, match="already registered"):
        MIL_HEADS.register("abmil")(nn.Identity)
    assert MIL_HEADS.get("abmil").__name__ == "ABMIL"


def test_an_unknown_name_lists_the_registered_heads():
    with pytest.raises(KeyError) as err:
        build_head("clam", DIM, 1)
    assert all(name in str(err.value) for name in NAMES)


def test_chowder_takes_a_bag_shorter_than_its_extremes():
    head = make("chowder").eval()
    bag = torch.randn(3, DIM)
    x, mask = padded([bag, torch.randn(25, DIM)])
    with torch.no_grad():
        alone, together = head(bag[None], None), head(x, mask)
    assert torch.isfinite(alone).all()
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)


def test_missing_extremes_repeat_the_least_extreme_real_score():
    scores = torch.tensor([[2.0, -1.0, 5.0, 99.0]])[..., None]
    mask = torch.tensor([[True, True, True, False]])
    top = extreme_scores(scores, mask, 5, largest=True)[0, :, 0]
    bottom = extreme_scores(scores, mask, 4, largest=False)[0, :, 0]
    assert top.tolist() == [5.0, 2.0, -1.0, -1.0, -1.0]
    assert bottom.tolist() == [-1.0, 2.0, 5.0, 5.0]


def test_chowder_keeps_ten_top_and_bottom_scores_by_default():
    head = make("chowder")
    assert (head.n_top, head.n_bottom) == (10, 10)
    assert head.head[0].in_features == 20


def test_masked_softmax_of_an_empty_bag_is_zero_not_nan():
    weights = masked_softmax(torch.randn(2, 4), torch.tensor([[False] * 4, [True, True, False, False]]))
    assert weights[0].tolist() == [0.0] * 4
    torch.testing.assert_close(weights[1].sum(), torch.tensor(1.0))


def test_build_head_passes_options_and_loads_transmil():
    assert "transmil" in heads()
    assert build_head("abmil", DIM, 2, hidden=32).embed.out_features == 32
