"""The method-agnostic step: gradient accumulation and bf16 autocast, in plain torch."""

import copy

import pytest
import torch

from sslray.methods import Schedule, build_method
from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.train.config import OptimConfig, TrainConfig
from sslray.train.loop import SSLStep

STATS = {"scale": 255.0, "mean": [0.5, 0.5], "std": [0.25, 0.25]}
OPTIM = OptimConfig(lr=1e-3, warmup_epochs=0, weight_decay=0.0, weight_decay_end=0.0, clip_grad=0.0,
                    scale_lr_with_batch=False)


class _Linear(torch.nn.Module):
    """A deterministic 'method' whose loss is a mean over samples, so accumulation is exact."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(2, 1)

    def make_views(self, images):
        return [images.mean(dim=(2, 3), keepdim=True)]

    def forward(self, views, step):
        from sslray.methods.base import StepOutput

        return StepOutput((self.backbone(views[0].flatten(1)) ** 2).mean())

    def trainable_modules(self):
        return [self.backbone]

    def before_optimizer_step(self, step):
        pass

    def after_optimizer_step(self, step):
        pass


def test_accumulated_micro_batches_give_the_full_batch_gradient():
    torch.manual_seed(0)
    raw = torch.randint(0, 255, (8, 2, 4, 4), dtype=torch.uint8)
    whole, split = _Linear(), None
    split = copy.deepcopy(whole)
    a = SSLStep(whole, whole, OPTIM, 10, 10, 8, STATS)
    b = SSLStep(split, split, OPTIM, 10, 10, 8, STATS, accumulate=4)
    ra, rb = a(raw, 0), b(raw, 0)
    for p, q in zip(whole.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # same update from one batch or four micro-batches
    assert ra.loss == pytest.approx(rb.loss, rel=1e-5)


def test_bf16_autocast_runs_a_real_method_on_cpu():
    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8,
                                                                       "embed_dim": 32, "depth": 1, "num_heads": 2}), 2)
    method = build_method("dino", {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8,
                                   "views": {"global_size": 32, "local_size": 16, "n_local": 1}}, backbone, Schedule(4))
    step = SSLStep(method, method, OPTIM, 4, 4, 4, STATS, precision="bf16", accumulate=2)
    seen = []
    hook = method.backbone.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    result = step(torch.randint(0, 255, (4, 2, 40, 40), dtype=torch.uint8), 0)
    hook.remove()
    assert torch.bfloat16 in seen and torch.isfinite(torch.tensor(result.loss))
    assert all(p.dtype == torch.float32 for p in method.parameters())  # weights stay fp32


def test_accumulation_and_precision_are_validated():
    with pytest.raises(ValueError, match="train.accumulate must be >= 1 and divide train.batch_size"):
        TrainConfig(batch_size=64, accumulate=5)
    with pytest.raises(ValueError, match="train.precision"):
        TrainConfig(precision="fp16")
