"""The collapse monitor: healthy, fully collapsed and dimensionally collapsed embeddings."""

import math

import torch

from sslray.methods.monitor import collapse_metrics, collapse_warning


def test_healthy_embeddings_spread_and_have_high_rank():
    torch.manual_seed(0)
    m = collapse_metrics(torch.randn(256, 64))
    assert math.isclose(m["feature_std"], 1 / 8, rel_tol=0.1) and m["feature_std_healthy"] == 1 / 8
    assert m["effective_rank"] > 40 and collapse_warning(m) is None


def test_complete_collapse_is_flagged():
    m = collapse_metrics(torch.ones(32, 16) + 1e-6 * torch.randn(32, 16))
    assert m["feature_std"] < 1e-4 and "collapsing" in collapse_warning(m)


def test_dimensional_collapse_shows_in_the_rank():
    torch.manual_seed(0)
    direction = torch.randn(1, 64)
    line = torch.randn(128, 1) * direction + 1e-4 * torch.randn(128, 64)  # all on one line through 0
    m = collapse_metrics(line)
    assert m["feature_std"] > 0.5 * m["feature_std_healthy"]  # the std alone would not see it
    assert m["effective_rank"] < 2 and "to a line" in collapse_warning(m)


def test_reference_rank_of_an_exact_low_rank_batch():
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 4))[0]  # 4 orthonormal directions, equal energy
    z = torch.randn(400, 4) @ basis.T
    # RankMe of isotropic rank-4 data after normalisation is close to 4
    assert 3.0 < collapse_metrics(z)["effective_rank"] < 4.5
