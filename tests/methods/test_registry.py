"""Every registered method, through the real training step: builds, runs, and learns a little.

A method registered without an entry in ``TINY`` fails here on purpose: each method must
prove on CPU that its loss goes down with the unchanged training loop.
"""

import pytest
import torch

from sslray.methods import METHODS, Schedule, build_method, method_config
from sslray.methods.base import EMBEDDING_GRIDS
from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.train.optim import OptimConfig
from sslray.train.loop import SSLStep

TINY_VIT = BackboneConfig("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2,
                                                   "num_heads": 2})
TINY_RESNET = BackboneConfig("resnet18")
DINO_HEAD = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "use_bn": True, "teacher_momentum": 0.9,
             "warmup_teacher_temp_epochs": 0, "freeze_last_layer_epochs": 0,
             "views": {"global_size": 32, "local_size": 16, "n_local": 2},
             "augment": {"gamma": [1.0, 1.0], "shift": 0.0}}
MILD = {"gamma": [1.0, 1.0], "shift": 0.0}
# method -> (backbone, method params, batch shape of raw uint8 tiles, or of a grid batch (B, H, W, D))
TINY = {
    "dino": (TINY_VIT, DINO_HEAD, (8, 2, 40, 40)),
    "channel_agnostic_dino": (TINY_VIT, DINO_HEAD, (8, 3, 40, 40)),
    "ibot": (TINY_VIT, {**DINO_HEAD, "patch_out_dim": 64, "mask_prob": 1.0, "teacher_momentum": 0.996,
                        "center_momentum": 0.99, "patch_center_momentum": 0.99}, (8, 2, 40, 40)),
    "mae": (TINY_VIT, {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "view_size": 32}, (8, 2, 40, 40)),
    "simclr": (TINY_RESNET, {"view_size": 32, "proj_hidden_dim": 32, "proj_dim": 16, "augment": MILD}, (8, 2, 40, 40)),
    "vicregl": (TINY_VIT, {"expander_dims": [64, 64], "local_dims": [32, 32],
                           "views": {"global_size": 32, "local_size": 16, "global_scale": [0.9, 1.0]},
                           "augment": {**MILD, "hflip": 0.0, "vflip": 0.0, "rot90": False}}, (8, 2, 40, 40)),
    "spot_dino": (None, {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "freeze_last_layer_epochs": 0,
                         "use_bn": True, "teacher_momentum": 0.9,
                         "model": {"dim": 16, "depth": 2, "num_heads": 2, "drop_path": 0.0},
                         "views": {"global_window": 3, "local_window": 2, "n_local": 2}}, (8, 4, 4, 12)),
    "mpcs": (TINY_RESNET, {"view_size": 32, "proj_hidden_dim": 32, "proj_dim": 16, "augment": MILD},
             (8, 2, 2, 40, 40)),
}


def _tiny_step(name: str, steps: int):
    backbone_cfg, params, shape = TINY[name]
    cls = METHODS.get(name)
    if cls.input_kind == EMBEDDING_GRIDS:
        return _tiny_grid_step(name, steps)
    in_chans = 1 if cls.channel_agnostic else shape[-3]
    torch.manual_seed(0)
    method = build_method(name, params, create_backbone(backbone_cfg, in_chans), Schedule(steps, steps))
    channels = 1 if cls.channel_agnostic else shape[-3]
    stats = {"scale": 255.0, "mean": [0.5] * channels, "std": [0.25] * channels}
    optim = OptimConfig(lr=1e-3, warmup_epochs=0, weight_decay=0.0, weight_decay_end=0.0, scale_lr_with_batch=False)
    step = SSLStep(method, method, optim, steps, steps, shape[0], stats, monitor_every=1)
    raw = torch.randint(0, 255, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return step, raw


def _tiny_grid_step(name: str, steps: int):
    """A method on spot grids: float tile embeddings (B, H, W, D), NaN in empty cells, no image stats."""
    _, params, shape = TINY[name]
    torch.manual_seed(0)
    cls = METHODS.get(name)
    backbone = cls.build_backbone(None, method_config(name, params), shape[-1])
    method = build_method(name, params, backbone, Schedule(steps, steps))
    optim = OptimConfig(lr=1e-3, warmup_epochs=0, weight_decay=0.0, weight_decay_end=0.0, scale_lr_with_batch=False)
    stats = {"scale": 1.0, "mean": [0.0], "std": [1.0]}
    step = SSLStep(method, method, optim, steps, steps, shape[0], stats, monitor_every=1)
    generator = torch.Generator().manual_seed(1)
    raw = torch.randn(shape, generator=generator)
    raw[:, 1:, 2:] = float("nan")  # spots are ragged: the grid is padded to the largest
    raw[: shape[0] // 2] += 1.0  # two kinds of spot
    return step, raw


def _encoder_input(name: str, raw: torch.Tensor) -> torch.Tensor:
    if METHODS.get(name).input_kind == EMBEDDING_GRIDS:
        return torch.rand(2, 5, raw.shape[-1])  # two spots of five tile embeddings
    return torch.rand(2, 1 if METHODS.get(name).channel_agnostic else raw.shape[-3], 32, 32)


def test_every_registered_method_has_a_tiny_recipe():
    assert set(METHODS) == set(TINY), "add a TINY entry (and a loss-decrease check) for every method"


@pytest.mark.parametrize("name", sorted(TINY))
def test_loss_decreases_on_a_fixed_batch(name):
    steps = 30
    step, raw = _tiny_step(name, steps)
    torch.set_num_threads(1)
    losses = [step(raw, i).loss for i in range(steps)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, f"{name}: loss {first:.4f} -> {last:.4f}"


@pytest.mark.parametrize("name", sorted(TINY))
def test_step_reports_collapse_metrics_and_a_usable_encoder(name):
    step, raw = _tiny_step(name, 2)
    result = step(raw, 0)
    assert {"feature_std", "effective_rank"} <= set(result.metrics)
    encoder = step.method.encoder()
    with torch.no_grad():
        features = encoder(_encoder_input(name, raw))
    assert features.shape == (2, step.method.embed_dim)


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_method_has_a_valid_config_and_a_doc_page(name):
    from sslray.config import load_config
    from sslray.train.config import PretrainConfig
    from tests.conftest import ROOT

    cls = METHODS.get(name)
    if cls.input_kind == EMBEDDING_GRIDS:  # trained by sslray aggregate, whose config holds the method's
        from sslray.aggregate import AggregateConfig

        cfg = load_config(AggregateConfig, ROOT / "configs" / "aggregate" / f"{name}.yaml", ["embeddings=e", "out=o"])
        assert isinstance(cfg.method_cfg, cls.Config)
    else:
        cfg = load_config(PretrainConfig, ROOT / "configs" / "methods" / f"{name}.yaml", ["store=s3://bucket/store"])
        assert cfg.method_name == name
    doc = (ROOT / "docs" / "methods" / f"{cls.doc_page or name}.md").read_text()
    assert "What it is for" in doc and "efaults" in doc
