"""The VICReg criterion against numpy, the variance hinge, covariance per location slot, several
views, and the cross-rank gather of its statistics."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslray.methods.vicreg_loss import covariance_term, global_loss, variance_term, vicreg_loss


def _numpy_vicreg(z1, z2, inv, var, cov, eps=1e-4):
    """VICReg written out from the paper's definitions, one dimension / pair at a time."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    n, d = z1.shape
    invariance = ((z1 - z2) ** 2).sum() / (n * d)

    def variance(z):
        return np.mean([max(0.0, 1.0 - math.sqrt(np.var(z[:, j], ddof=1) + eps)) for j in range(d)])

    def covariance(z):
        c = np.cov(z, rowvar=False, ddof=1)
        return sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    v = (variance(z1) + variance(z2)) / 2
    c = (covariance(z1) + covariance(z2)) / 2
    return inv * invariance + var * v + cov * c, invariance, v, c


def test_vicreg_loss_matches_numpy_on_a_hand_made_batch():
    z1 = [[1.0, 2.0, 0.0], [3.0, 0.0, 1.0], [-1.0, 1.0, 0.5], [0.0, -2.0, 0.2]]
    z2 = [[0.5, 2.0, 0.0], [3.0, 1.0, 1.0], [-1.0, 0.0, 0.4], [0.1, -2.0, 0.3]]
    loss, terms = vicreg_loss(torch.tensor(z1), torch.tensor(z2), inv=25.0, var=25.0, cov=1.0)
    expected, inv, var, cov = _numpy_vicreg(z1, z2, 25.0, 25.0, 1.0)
    assert terms["inv"].item() == pytest.approx(inv, rel=1e-5)
    assert terms["var"].item() == pytest.approx(var, rel=1e-5)
    assert terms["cov"].item() == pytest.approx(cov, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert inv > 0 and var > 0 and cov > 0  # every term is exercised


def test_vicreg_loss_matches_numpy_on_random_embeddings():
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 5) * 0.7, torch.randn(8, 5) * 1.3
    loss, _ = vicreg_loss(z1, z2, inv=2.0, var=3.0, cov=4.0)
    assert loss.item() == pytest.approx(_numpy_vicreg(z1.numpy(), z2.numpy(), 2.0, 3.0, 4.0)[0], rel=1e-5)


def test_variance_term_is_zero_when_spread_and_positive_when_collapsed():
    spread = torch.tensor([[2.0, -3.0], [-2.0, 3.0], [2.0, 3.0], [-2.0, -3.0]])  # std >= 1 in every dimension
    assert variance_term(spread).item() == 0.0
    collapsed = torch.ones(4, 2)
    assert variance_term(collapsed).item() == pytest.approx(1 - math.sqrt(1e-4))
    half = torch.tensor([[0.25], [-0.25], [0.25], [-0.25]])  # std 0.29 < 1: hinge active
    std = math.sqrt(np.var([0.25, -0.25, 0.25, -0.25], ddof=1) + 1e-4)
    assert variance_term(half).item() == pytest.approx(1 - std, rel=1e-6)


def test_covariance_term_hand_checked_and_per_location_slot():
    # two perfectly correlated dimensions, variance 1 each: off-diagonals 1 and 1, / d = 2 / 2
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]]) * math.sqrt(3 / 4)
    assert covariance_term(z).item() == pytest.approx(1.0, rel=1e-6)
    assert covariance_term(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])).item() == 0.0
    torch.manual_seed(1)
    maps = torch.randn(6, 3, 4)  # (N images, K matched slots, D)
    per_slot = torch.stack([covariance_term(maps[:, k]) for k in range(3)]).mean()
    assert covariance_term(maps).item() == pytest.approx(per_slot.item(), rel=1e-6)


def test_global_loss_of_two_views_is_vicreg_and_of_more_views_averages_the_pairs():
    torch.manual_seed(2)
    z = [torch.randn(6, 4) for _ in range(3)]
    assert global_loss(z[:2], 25, 25, 1)[0].item() == pytest.approx(vicreg_loss(z[0], z[1])[0].item())
    loss, terms = global_loss(z, 25.0, 25.0, 1.0)
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # the 2 global views against every other view
    inv = np.mean([F.mse_loss(z[i], z[j]).item() for i, j in pairs])
    var = np.mean([variance_term(v).item() for v in z])
    cov = np.mean([covariance_term(v).item() for v in z])
    assert terms["inv"].item() == pytest.approx(inv, rel=1e-6)
    assert loss.item() == pytest.approx(25 * inv + 25 * var + cov, rel=1e-6)


def test_vicreg_loss_refuses_misaligned_or_single_rows():
    with pytest.raises(ValueError, match="row-aligned"):
        vicreg_loss(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        vicreg_loss(torch.zeros(1, 3), torch.zeros(1, 3))


# --- data parallel ------------------------------------------------------------------------


def _gather_worker(rank: int, init: str, z1: torch.Tensor, z2: torch.Tensor, expected: dict, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        rows = slice(rank * 4, rank * 4 + 4)
        mine = z1[rows].clone().requires_grad_(True)
        loss, terms = vicreg_loss(mine, z2[rows], inv=25.0, var=25.0, cov=1.0)
        for name in ("var", "cov"):  # statistics of the global batch of 8, not of this rank's 4
            assert abs(terms[name].item() - expected[name]) < 1e-5, (name, terms[name].item(), expected[name])
        loss.backward()
        assert mine.grad is not None and mine.grad.abs().sum() > 0
        torch.save({"rank": rank}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_variance_and_covariance_see_every_rank(tmp_path):
    torch.manual_seed(9)
    z1, z2 = torch.randn(8, 3), torch.randn(8, 3)
    _, full = vicreg_loss(z1, z2)
    _, half = vicreg_loss(z1[:4], z2[:4])
    assert abs(full["cov"].item() - half["cov"].item()) > 1e-3  # the gather matters for this batch
    expected = {name: full[name].item() for name in ("var", "cov")}
    out = str(tmp_path / "done")
    torch.multiprocessing.spawn(_gather_worker, args=(f"file://{tmp_path / 'pg'}", z1, z2, expected, out), nprocs=2)
    assert (tmp_path / "done.0").exists() and (tmp_path / "done.1").exists()
