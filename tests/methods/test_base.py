"""The method contract's defaults: what a method that overrides only the views and the loss gets."""

import pytest
import torch
from torch import nn

from sslray.methods.base import Schedule, SSLMethod, StepOutput


class _Backbone(nn.Module):
    num_features = 4

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)


def test_a_schedule_needs_a_step_and_at_least_one_step_per_epoch():
    with pytest.raises(ValueError, match="total_steps must be >= 1, got 0"):
        Schedule(total_steps=0)
    assert Schedule(total_steps=10, steps_per_epoch=0).steps_per_epoch == 1


def test_a_step_output_has_no_metrics_or_features_by_default():
    out = StepOutput(torch.tensor(1.0))
    assert out.metrics == {} and out.features is None
    assert StepOutput(torch.tensor(1.0)).metrics is not out.metrics  # not one dict shared by every step


def test_the_encoder_and_the_trained_modules_are_the_backbone_by_default():
    backbone = _Backbone()
    method = SSLMethod(backbone, cfg={"any": 1}, schedule=Schedule(5))
    assert method.encoder() is backbone and method.trainable_modules() == [backbone]
    assert method.embed_dim == 4 and method.cfg == {"any": 1} and method.schedule.total_steps == 5
    assert not SSLMethod.channel_agnostic and not SSLMethod.needs_pairs
    method.before_optimizer_step(0)  # hooks do nothing unless a method needs them
    method.after_optimizer_step(0)


def test_views_and_the_loss_must_be_implemented():
    method = SSLMethod(_Backbone(), cfg=None, schedule=Schedule(1))
    with pytest.raises(NotImplementedError):
        method.make_views(torch.zeros(1, 3, 8, 8))
    with pytest.raises(NotImplementedError):
        method([torch.zeros(1, 3, 8, 8)], 0)
