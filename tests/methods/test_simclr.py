"""SimCLR's NT-Xent against a textbook computation, and its projector's gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslray.methods import Schedule, build_method
from sslray.methods.simclr import SimCLRConfig, nt_xent
from sslray.models.backbones import BackboneConfig, create_backbone


def reference_nt_xent(z1, z2, t):
    """The 2N x 2N formulation of the paper: each of the 2N views against the other 2N - 1."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = len(z1)
    sim = z @ z.T / t
    sim.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, positives)


def test_nt_xent_matches_the_textbook_formulation():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    assert nt_xent(z1, z2, 0.3).item() == pytest.approx(reference_nt_xent(z1, z2, 0.3).item(), abs=1e-5)


def test_nt_xent_hand_checked_pair():
    # two images; views of the same image identical, the two images orthogonal
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 1.0
    # for each view: positive logit 1, negatives: the other image's two views (logit 0 each)
    expected = -math.log(math.e / (math.e + 2))
    assert nt_xent(z1, z1.clone(), t).item() == pytest.approx(expected, abs=1e-6)


def test_gradients_reach_backbone_and_projector():
    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig("resnet18"), 2)
    cfg = SimCLRConfig(view_size=32, proj_hidden_dim=16, proj_dim=8)
    method = build_method("simclr", cfg, backbone, Schedule(10))
    out = method(method.make_views(torch.rand(4, 2, 48, 48)), 0)
    out.loss.backward()
    assert method.projector[0].weight.grad.abs().sum() > 0
    assert backbone.conv1.weight.grad.abs().sum() > 0
    assert out.features.shape == (4, method.embed_dim) and not out.features.requires_grad


def test_config_is_validated():
    with pytest.raises(ValueError, match="method.temperature"):
        SimCLRConfig(temperature=0)


def test_mpcs_contrasts_the_two_magnifications_of_a_pair():
    from sslray.methods.simclr import MPCSConfig

    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig("resnet18"), 3)
    method = build_method("mpcs", MPCSConfig(view_size=32, proj_hidden_dim=16, proj_dim=8), backbone, Schedule(10))
    assert method.needs_pairs and method.cfg.policy.kind == "ordered"
    pairs = torch.rand(4, 2, 3, 40, 40)
    pairs[:, 1] = 0.0  # make the sides distinguishable
    views = method.make_views(pairs)
    assert len(views) == 2 and views[1].abs().max() < views[0].abs().max()
    assert torch.isfinite(method(views, 0).loss)
    with pytest.raises(ValueError, match=r"mpcs trains on magnification pairs \(B, 2, C, H, W\)"):
        method.make_views(torch.rand(4, 3, 40, 40))
    with pytest.raises(ValueError, match="method.pair_policy"):
        MPCSConfig(pair_policy="nearest")
