"""VICRegL: view geometry through crops and flips, ViT and ResNet backbones, gradients, and a
tiny model that learns (the VICReg criterion and the local matching are tested in
test_vicreg_loss and test_vicregl_local)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslray.config import ConfigError
from sslray.methods import Schedule, build_method, method_config
from sslray.methods.vicregl import (
    VICRegL,
    VICRegLConfig,
)
from sslray.models.backbones import BackboneConfig, create_backbone

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _tiny(backbone=None, **params) -> VICRegL:
    cfg = {"expander_dims": [64, 64], "local_dims": [32, 32], "views": {"global_size": 32, "local_size": 16}, **params}
    backbone = backbone or create_backbone(BackboneConfig("vit_tiny_patch16_224", TINY_VIT), in_chans=2)
    return build_method("vicregl", cfg, backbone, Schedule(total_steps=10))


# --- views --------------------------------------------------------------------------------


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


# --- the method ---------------------------------------------------------------------------


def test_split_out_names_are_still_importable_from_vicregl():
    from sslray.methods import vicreg_loss, vicregl, vicregl_local

    assert vicregl.vicreg_loss is vicreg_loss.vicreg_loss and vicregl.local_loss is vicregl_local.local_loss
    assert all(hasattr(vicregl, name) for name in vicregl.__all__)


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


