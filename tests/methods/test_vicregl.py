"""VICRegL: the VICReg terms against numpy, the variance hinge, location and feature matching
on hand-made boxes, view geometry through crops and flips, ViT and ResNet backbones,
gradients, the cross-rank gather, and a tiny model that learns."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslray.config import ConfigError
from sslray.methods import Schedule, build_method, method_config
from sslray.methods.vicregl import (
    VICRegL,
    VICRegLConfig,
    ViewGeometry,
    box_grid,
    covariance_term,
    global_loss,
    local_pair_loss,
    nearest_matches,
    variance_term,
    vicreg_loss,
)
from sslray.models.backbones import BackboneConfig, create_backbone

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _tiny(backbone=None, **params) -> VICRegL:
    cfg = {"expander_dims": [64, 64], "local_dims": [32, 32], "views": {"global_size": 32, "local_size": 16}, **params}
    backbone = backbone or create_backbone(BackboneConfig("vit_tiny_patch16_224", TINY_VIT), in_chans=2)
    return build_method("vicregl", cfg, backbone, Schedule(total_steps=10))


# --- the VICReg criterion -----------------------------------------------------------------


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


# --- matching -----------------------------------------------------------------------------


def test_box_grid_places_cell_centres_in_image_coordinates():
    grid = box_grid(torch.tensor([[0.0, 0.0, 16.0, 16.0]]), 2, 2)
    assert grid[0].tolist() == [[[4.0, 4.0], [12.0, 4.0]], [[4.0, 12.0], [12.0, 12.0]]]  # (x, y) per cell


def test_location_matching_picks_the_geometrically_nearest_location():
    """View 1 covers [0, 16]^2, view 2 covers [8, 24]^2 of the same image, 2x2 cells each.

    View 1's cell (1, 1) is centred at (12, 12), exactly where view 2's cell (0, 0) is: the
    only zero-distance pair, so with one match kept that is the match.
    """
    grid_1 = box_grid(torch.tensor([[0.0, 0.0, 16.0, 16.0]]), 2, 2).flatten(1, 2)
    grid_2 = box_grid(torch.tensor([[8.0, 8.0, 24.0, 24.0]]), 2, 2).flatten(1, 2)
    keep, match = nearest_matches(torch.cdist(grid_1, grid_2), k=1)
    assert keep.tolist() == [[3]] and match.tolist() == [[0]]
    keep, match = nearest_matches(torch.cdist(grid_1, grid_2), k=None)  # every location, raster order
    assert keep.tolist() == [[0, 1, 2, 3]] and match.tolist() == [[0, 0, 0, 0]]
    keep, match = nearest_matches(torch.cdist(grid_2, grid_1), k=2)  # back: (12,12)->(12,12) and a tie at 8
    assert keep[0, 0].item() == 0 and match[0, 0].item() == 3


def test_feature_matching_picks_the_nearest_embedding_and_keeps_the_closest_k():
    a = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]])
    b = torch.tensor([[[5.0, 5.2], [0.0, 1.0], [20.0, 20.0]]])
    keep, match = nearest_matches(torch.cdist(a, b), k=2)
    assert keep.tolist() == [[0, 1]] and match.tolist() == [[1, 0]]  # (9, 0) is farthest from all of b


def test_view_grids_follow_crops_flips_and_transposes():
    """An image whose two channels are its own x and y coordinates: after make_views (crop,
    flips, transposes; photometric augmentations switched off), each view's pixels averaged
    over a feature cell are that cell's image coordinates, as its geometry grid says."""
    torch.manual_seed(3)
    method = _tiny(views={"global_size": 32, "local_size": 16, "n_local": 1},
                   augment={"hflip": 0.5, "vflip": 0.5, "rot90": True, "gamma": [1.0, 1.0], "shift": 0.0})
    ys, xs = torch.meshgrid(torch.arange(64.0) + 0.5, torch.arange(64.0) + 0.5, indexing="ij")
    images = torch.stack([xs, ys]).expand(8, 2, 64, 64).contiguous()
    views = method.make_views(images)
    flips = torch.stack([torch.stack([g.hflip, g.vflip, g.transpose]) for g in method._geometry])
    assert flips.any(-1).all() and (~flips).any(-1).all()  # both outcomes of every flip occur
    for view, geometry in zip(views, method._geometry):
        cells = 4 if view.shape[-1] == 32 else 2
        pooled = F.adaptive_avg_pool2d(view, cells).permute(0, 2, 3, 1)  # (B, h, w, (x, y))
        # within half a pixel: bilinear sampling is clamped at the image border
        assert (pooled - geometry.grid(cells, cells)).abs().max() < 0.6


def test_min_foreground_crops_contain_cells():
    torch.manual_seed(10)
    images = torch.zeros(8, 2, 64, 64)
    images[:, :, 4:20, 40:56] = 1.0  # one bright "cell" in a dark field
    method = _tiny(views={"global_size": 16, "local_size": 16, "global_scale": [0.05, 0.1]},
                   augment={"gamma": [1.0, 1.0], "shift": 0.0, "min_foreground": 0.5})
    for view in method.make_views(images):
        assert (view.mean(dim=(1, 2, 3)) > 0.25).all()


def test_local_loss_of_identical_views_has_no_invariance_term():
    torch.manual_seed(4)
    maps = torch.randn(4, 3, 3, 8)
    grid = ViewGeometry(torch.tensor([[0.0, 0.0, 30.0, 30.0]] * 4), *(torch.zeros(4, dtype=torch.bool),) * 3)
    loss, terms = local_pair_loss(maps, maps, grid.grid(3, 3), grid.grid(3, 3), VICRegLConfig())
    assert terms["inv"].item() == 0.0 and loss.item() > 0  # var/cov still see 4 images per slot


# --- the method ---------------------------------------------------------------------------


def test_config_defaults_and_errors_name_the_key():
    cfg = VICRegLConfig()
    assert (cfg.inv_coeff, cfg.var_coeff, cfg.cov_coeff, cfg.alpha) == (25.0, 25.0, 1.0, 0.75)
    assert cfg.views.n_local == 0 and cfg.views.global_size == 224 and tuple(cfg.views.global_scale) == (0.2, 1.0)
    partial = method_config("vicregl", {"views": {"global_size": 96}})  # a partial block keeps vicregl's defaults
    assert partial.views.n_local == 0 and tuple(partial.views.global_scale) == (0.2, 1.0)
    for params, key in [({"alpha": 1.5}, "method.alpha"), ({"expander_dims": []}, "method.expander_dims"),
                        ({"num_matches": [0, 4]}, "method.num_matches"), ({"var_coeff": -1.0}, "method.inv_coeff")]:
        with pytest.raises(ConfigError, match=key):
            method_config("vicregl", params)


def test_vit_forward_shapes_metrics_and_features():
    torch.manual_seed(5)
    method = _tiny(views={"global_size": 32, "local_size": 16, "n_local": 2})
    views = method.make_views(torch.rand(4, 2, 48, 48))
    assert [tuple(v.shape) for v in views] == [(4, 2, 32, 32)] * 2 + [(4, 2, 16, 16)] * 2
    out = method(views, step=0)
    m = out.metrics
    assert out.loss.item() == pytest.approx(0.75 * m["global_loss"] + 0.25 * m["local_loss"], rel=1e-5)
    assert m["global_loss"] == pytest.approx(25 * m["global_inv"] + 25 * m["global_var"] + m["global_cov"], rel=1e-5)
    assert torch.allclose(out.features, method.encoder()(views[0]), atol=1e-5)  # the exported embedding
    assert not out.features.requires_grad and method.encoder() is method.backbone


def test_resnet_forward_uses_the_last_conv_stage():
    torch.manual_seed(6)
    resnet = create_backbone(BackboneConfig("resnet18"), in_chans=2)
    method = _tiny(resnet, views={"global_size": 64, "local_size": 32, "n_local": 1})
    views = method.make_views(torch.rand(4, 2, 64, 64))
    out = method(views, step=0)  # 2x2 maps for the global views, 1x1 for the local one
    assert out.features.shape == (4, 512) and torch.isfinite(out.loss)
    out.loss.backward()
    assert resnet.conv1.weight.grad.abs().sum() > 0  # the stem (timm zero-inits each block's last BatchNorm)


def test_gradients_reach_backbone_expander_and_local_projector():
    torch.manual_seed(7)
    method = _tiny()
    method(method.make_views(torch.rand(4, 2, 32, 32)), 0).loss.backward()
    for module in method.trainable_modules():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
    assert method.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


def test_local_only_and_global_only_build_only_what_they_use():
    torch.manual_seed(8)
    local_only = _tiny(alpha=0.0)
    assert local_only.expander is None and len(local_only.trainable_modules()) == 2
    out = local_only(local_only.make_views(torch.rand(4, 2, 32, 32)), 0)
    out.loss.backward()
    assert "global_loss" not in out.metrics
    assert local_only.backbone.patch_embed.proj.weight.grad.abs().sum() > 0  # through the patch tokens alone
    global_only = _tiny(alpha=1.0)
    assert global_only.local_projector is None
    assert "local_loss" not in global_only([torch.rand(4, 2, 32, 32)] * 2, 0).metrics  # needs no geometry


def test_forward_refuses_views_it_did_not_make():
    method = _tiny()
    with pytest.raises(RuntimeError, match="make_views"):
        method([torch.rand(4, 2, 32, 32)] * 2, 0)


def test_tiny_model_loss_decreases_on_a_fixed_batch():
    """Eight smooth images, each with its own mean intensity, so two crops of one image share
    something to be invariant to; photometric augmentations are off to keep 30 steps enough."""
    torch.manual_seed(0)
    method = _tiny(augment={"gamma": [1.0, 1.0], "shift": 0.0})
    smooth = F.interpolate(torch.rand(8, 2, 4, 4), size=32, mode="bilinear", align_corners=False)
    images = 0.5 * torch.rand(8, 2, 1, 1) + 0.5 * smooth
    params = [p for m in method.trainable_modules() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    losses, local = [], []
    for step in range(30):
        out = method(method.make_views(images), step)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
        local.append(out.metrics["local_loss"])
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert sum(losses[-5:]) < 0.85 * sum(losses[:5])
    assert sum(local[-5:]) < sum(local[:5])  # the local objective is learnt too


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
