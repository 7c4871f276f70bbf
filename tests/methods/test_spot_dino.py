"""spot_dino: DINO's loss, EMA and freezing on grids of tile embeddings, through the real step."""

import numpy as np
import pytest
import torch
from timm.layers import DropPath

from sslray.aggregate.grids import build_grids
from sslray.methods import METHODS, Schedule, build_method, method_config
from sslray.methods.base import EMBEDDING_GRIDS
from sslray.methods.dino import DINO
from sslray.methods.spot_views import grid_batch
from sslray.models.spot_encoder import SpotEncoder
from sslray.train.loop import SSLStep
from sslray.train.optim import OptimConfig
from tests.aggregate.tables import tiles_of

PARAMS = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "freeze_last_layer_epochs": 0,
          "center_momentum": 0.5, "model": {"dim": 16, "depth": 2, "num_heads": 2},
          "views": {"global_window": 4, "local_window": 2, "n_local": 2}}


def _step(steps: int, **params) -> tuple[SSLStep, torch.Tensor]:
    torch.manual_seed(0)
    tiles = tiles_of(16)
    grids, _ = build_grids(tiles["image_id"], tiles["x"], tiles["y"])
    cls = METHODS.get("spot_dino")
    cfg = method_config("spot_dino", {**PARAMS, **params})
    method = build_method("spot_dino", cfg, cls.build_backbone(None, cfg, 12), Schedule(steps, 2))
    optim = OptimConfig(lr=1e-3, warmup_epochs=0, scale_lr_with_batch=False)
    step = SSLStep(method, method, optim, steps, 2, 8, {"scale": 1.0, "mean": [0.0], "std": [1.0]}, monitor_every=10)
    return step, torch.from_numpy(grid_batch(tiles["embedding"], grids))


def test_is_a_dino_on_spot_grids_with_a_spot_encoder():
    cls = METHODS.get("spot_dino")
    assert issubclass(cls, DINO) and cls.input_kind == EMBEDDING_GRIDS
    step, _ = _step(1)
    assert isinstance(step.method.encoder(), SpotEncoder) and step.method.embed_dim == 16
    def drop_rates(module):
        return [m.drop_prob for m in module.modules() if isinstance(m, DropPath)]

    assert max(drop_rates(step.method.backbone)) > 0 and set(drop_rates(step.method.teacher_backbone)) == {0.0}


def test_loss_falls_through_the_real_step_and_the_teacher_moves_by_ema_only():
    """From settled centres the student learns to match the teacher (the loss first rises while
    the centre, momentum 0.5 here, spreads the targets of a near-constant random encoder)."""
    step, grids = _step(40)
    torch.set_num_threads(1)
    results = [step(grids[torch.randperm(16)[:8]], i) for i in range(40)]
    losses = [r.loss for r in results]
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[2:7]) - 0.3
    assert {"teacher_temp", "feature_std", "effective_rank"} <= set(results[0].metrics)
    method = step.method
    assert all(p.grad is None and not p.requires_grad for p in method.teacher_backbone.parameters())
    assert not torch.allclose(method.teacher_backbone.token_embed.weight, method.backbone.token_embed.weight)


def test_the_last_layer_stays_frozen_for_its_epochs():
    step, grids = _step(4, freeze_last_layer_epochs=1)  # 2 steps per epoch
    before = step.method.head.last_layer.weight.detach().clone()
    step(grids[:8], 0)
    step(grids[:8], 1)
    assert torch.equal(step.method.head.last_layer.weight, before)
    step(grids[:8], 2)
    assert not torch.equal(step.method.head.last_layer.weight, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_steps_on_cuda_with_bf16():
    step, grids = _step(3)
    step.method.cuda()
    step.precision = "bf16"
    grids = grids.cuda()
    losses = [step(grids[:8], i).loss for i in range(3)]
    assert all(np.isfinite(losses))
