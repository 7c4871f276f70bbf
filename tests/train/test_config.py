"""The pretraining config: the training knobs checked when built, the method's keys resolved by the
method, the ViT's native size filled in from the method's views."""

import pytest

from sslray.config import ConfigError, from_dict, to_dict
from sslray.train.config import PretrainConfig, TrainConfig


def test_pretrain_config_validates_method_params():
    with pytest.raises(ConfigError, match=r"method.*'bogus'"):
        from_dict(PretrainConfig, {"store": "x", "method": {"name": "dino", "bogus": 1}})
    with pytest.raises(ConfigError, match="unknown SSL method 'nope'"):
        from_dict(PretrainConfig, {"store": "x", "method": {"name": "nope"}})
    with pytest.raises(ConfigError, match=r"method\.views\.n_local: expected an integer"):
        from_dict(PretrainConfig, {"store": "x", "method": {"views": {"n_local": "many"}}})
    cfg = from_dict(PretrainConfig, {"store": "x", "method": {"name": "dino", "out_dim": 128}})
    resolved = to_dict(cfg)
    assert resolved["method"]["out_dim"] == 128 and resolved["method"]["student_temp"] == 0.1
    assert resolved["model"]["kwargs"]["img_size"] == 224  # the global view size, filled in


def test_input_size_follows_the_methods_view_size():
    simclr = from_dict(PretrainConfig, {"store": "s", "model": {"name": "resnet18"},
                                        "method": {"name": "simclr", "view_size": 96}})
    dino = from_dict(PretrainConfig, {"store": "s", "method": {"name": "dino", "views": {"global_size": 160}}})
    assert simclr.input_size == 96 and dino.input_size == 160


@pytest.mark.parametrize(("values", "message"), [
    ({"batch_size": 1}, "train.batch_size must be >= 2"),
    ({"num_workers": -1}, "train.num_workers must be >= 0"),
    ({"cpus_per_worker": 0}, "train.cpus_per_worker > 0"),
    ({"steps": 0}, "train.steps must be >= 1"),
    ({"batch_size": 10, "accumulate": 3}, r"train.accumulate must be >= 1 and divide train.batch_size \(10\)"),
    ({"precision": "fp16"}, "train.precision must be auto, bf16 or fp32, got 'fp16'"),
    ({"placement_strategy": "pack"}, "train.placement_strategy must be one of PACK, SPREAD"),
    ({"shuffle_buffer_mb": 0}, "train.shuffle_buffer_mb must be >= 1"),
    ({"epochs": 0}, "train.epochs must be > 0"),
])
def test_training_knobs_are_checked_naming_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**values)


def test_the_defaults_are_a_valid_training_config():
    cfg = TrainConfig(steps=5, accumulate=4, batch_size=8, num_workers=0, precision="bf16", placement_strategy="SPREAD")
    assert (cfg.steps, cfg.accumulate) == (5, 4)


def test_a_store_is_required():
    with pytest.raises(ConfigError, match="store: the tile store URL is required"):
        PretrainConfig()


def test_the_method_defaults_to_dino_and_a_set_img_size_is_kept():
    cfg = from_dict(PretrainConfig, {"store": "s", "model": {"kwargs": {"img_size": 96}}})
    assert cfg.method_name == "dino" and cfg.input_size == 96
    assert cfg.model.kwargs["img_size"] == 96
    resnet = from_dict(PretrainConfig, {"store": "s", "model": {"name": "resnet18"}})
    assert "img_size" not in resnet.model.kwargs  # only ViTs take one
