"""The optimiser config: DINO's defaults, checked when built, importable without the platform."""

import subprocess
import sys

import pytest

from sslray.train.optim import OptimConfig


@pytest.mark.parametrize("values", [{"lr": 0}, {"lr": -1e-3}, {"min_lr": -1e-6}, {"warmup_epochs": -1}])
def test_a_non_positive_rate_or_a_negative_warm_up_is_refused(values):
    with pytest.raises(ValueError, match="optim.lr must be > 0"):
        OptimConfig(**values)


def test_the_defaults_are_dinos_schedule():
    cfg = OptimConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.weight_decay_end, cfg.warmup_epochs) == (5e-4, 0.04, 0.4, 10)
    assert cfg.scale_lr_with_batch and OptimConfig(lr=1e-3, min_lr=0, warmup_epochs=0).min_lr == 0


def test_it_imports_without_the_pretraining_config():
    code = "import sys, sslray.train.optim; print(sorted(m for m in ('sslray.tracking', 'sslray.storage') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
