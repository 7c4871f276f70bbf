"""AggregateConfig: the keys sslray aggregate has always read, and the spot_dino run it trains with."""

from pathlib import Path

import pytest

from sslray.aggregate import AggregateConfig
from sslray.aggregate.config import pretrain_config
from sslray.config import ConfigError, from_dict, load_config, to_dict
from sslray.methods.spot_dino import SpotDINOConfig
from tests.aggregate.tables import config_obj


def test_bad_config_keys_and_values_are_named():
    with pytest.raises(ConfigError, match="unknown config key 'spot_col'"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "spot_col": "image_id"})
    with pytest.raises(ConfigError, match="unknown config key views.'n_locals'"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "views": {"n_locals": 2}})
    with pytest.raises(ConfigError, match="embeddings is required"):
        from_dict(AggregateConfig, {"out": "o"})
    with pytest.raises(ConfigError, match="model.dim"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "model": {"dim": 10, "num_heads": 4}})
    with pytest.raises(ConfigError, match="views.token_dropout"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "views": {"token_dropout": 1.0}})
    with pytest.raises(ConfigError, match="device must be"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "device": "tpu"})
    with pytest.raises(ConfigError, match="out_dims"):
        from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "dino": {"out_dims": 8}})


def test_shipped_config_loads_with_overrides():
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(AggregateConfig, root / "configs" / "aggregate" / "spot_dino.yaml",
                      ["embeddings=s3://b/emb", "out=s3://b/spots", "model.depth=2", "dino.out_dim=512"])
    assert cfg.model.depth == 2 and cfg.model.dim == 192 and cfg.views.n_local == 6 and cfg.tile_size is None
    assert isinstance(cfg.method_cfg, SpotDINOConfig) and cfg.method_cfg.out_dim == 512
    assert cfg.method_cfg.model.depth == 2 and cfg.dino["teacher_momentum"] == 0.996  # defaults filled in
    assert not cfg.optim.scale_lr_with_batch


def test_the_run_is_a_spot_dino_pretraining_with_the_same_optimiser_and_schedule():
    cfg = config_obj(steps=30, batch_size=64, seed=3)
    run = pretrain_config(cfg, n_spots=20, use_gpu=False)
    assert run.method_name == "spot_dino" and run.store == cfg.embeddings and run.name == "aggregate"
    assert run.method_cfg.model == cfg.model and run.method_cfg.views == cfg.views
    assert to_dict(run.optim) == to_dict(cfg.optim) and not run.optim.scale_lr_with_batch
    assert run.train.steps == 30 and run.train.seed == 3
    assert run.train.batch_size == 20  # a batch never exceeds the spots
    assert pretrain_config(from_dict(AggregateConfig, {"embeddings": "e", "out": "o", "num_workers": 2}), 20,
                           False).train.batch_size == 10
