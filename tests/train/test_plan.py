"""The training plan: step counts every worker agrees on, and the data facts every checkpoint keeps."""

import pytest

from sslray.config import ConfigError
from sslray.train.config import PretrainConfig
from sslray.train.plan import TrainingPlan, checkpoint_meta

TINY_MODEL = {"name": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}


def _cfg(store_url: str, **train) -> PretrainConfig:
    from sslray.config import from_dict

    return from_dict(PretrainConfig, {"store": store_url, "model": TINY_MODEL, "train": {"batch_size": 8, **train},
                                      "method": {"name": "dino", "views": {"global_size": 32, "local_size": 16}}})


def test_steps_follow_epochs_workers_and_batch(tiny_store):
    plan = TrainingPlan.of(_cfg(tiny_store.url, epochs=2, num_workers=2), tiny_store)
    assert plan.global_batch == 16 and plan.steps_per_epoch == len(tiny_store) // 16
    assert plan.total_steps == 2 * plan.steps_per_epoch
    assert TrainingPlan.of(_cfg(tiny_store.url, steps=5), tiny_store).total_steps == 5


def test_data_facts_record_channels_scaling_and_lineage(tiny_store):
    facts = TrainingPlan.of(_cfg(tiny_store.url, steps=1), tiny_store).data
    assert facts.channels == ["DNA", "cytoplasm"] and facts.in_chans == 2 and not facts.per_channel
    assert facts.mean == tiny_store.info.mean and facts.scale == 255.0
    assert len(facts.lineage.manifest_sha256) == 64 and facts.lineage.store == tiny_store.url


def test_channel_agnostic_methods_see_one_pooled_channel(tiny_store):
    cfg = _cfg(tiny_store.url, steps=1)
    cfg = PretrainConfig(store=cfg.store, model=cfg.model, train=cfg.train,
                         method={"name": "channel_agnostic_dino", "views": {"global_size": 32, "local_size": 16}})
    facts = TrainingPlan.of(cfg, tiny_store).data
    assert facts.in_chans == 1 and facts.per_channel and len(facts.mean) == len(facts.std) == 1


def test_fewer_samples_than_one_global_batch_is_a_config_error(tiny_store):
    with pytest.raises(ConfigError, match="train.batch_size"):
        TrainingPlan.of(_cfg(tiny_store.url, batch_size=len(tiny_store), num_workers=2), tiny_store)


def test_checkpoint_meta_keeps_the_keys_sslray_json_always_had(tiny_store):
    cfg = _cfg(tiny_store.url, steps=1)
    meta = checkpoint_meta(cfg, TrainingPlan.of(cfg, tiny_store).data, 32, run_id="abc").to_json()
    assert {"method", "model", "in_chans", "per_channel", "image_size", "embed_dim", "channels", "scale", "mean",
            "std", "lineage", "config", "format_version", "files"} <= set(meta)
    assert meta["model"] == {"name": "vit_tiny_patch16_224", "kwargs": cfg.model.kwargs, "weights": None}
    assert meta["lineage"]["mlflow_run_id"] == "abc" and meta["image_size"] == 32 and "step" not in meta
