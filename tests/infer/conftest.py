"""Fixtures of the embedding tests: an untrained tiny ViT checkpoint for the tiny store."""

import pytest

from sslray.config import from_dict

TINY_VIT = {"name": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}


@pytest.fixture(scope="session")
def checkpoint(tiny_store, tmp_path_factory) -> str:
    """An untrained tiny ViT saved in the checkpoint format (two channels DNA/cytoplasm, 32 px)."""
    from sslray.quickstart.pipeline import save_random_init
    from sslray.train.config import PretrainConfig

    cfg = from_dict(PretrainConfig, {"store": tiny_store.url, "model": TINY_VIT, "method": {
        "name": "dino", "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
        "views": {"global_size": 32, "local_size": 16, "n_local": 2}}})
    url = str(tmp_path_factory.mktemp("ckpt") / "random_init")
    save_random_init(cfg, tiny_store, url)
    return url


def _save_tiny_vit(url: str, in_chans: int, per_channel: bool, channels: list[str]) -> str:
    import torch

    from sslray.artifacts.checkpoint import save_checkpoint
    from sslray.models.backbones import BackboneConfig, create_backbone

    torch.manual_seed(0)
    encoder = create_backbone(BackboneConfig(**TINY_VIT), in_chans)
    n = 1 if per_channel else in_chans
    save_checkpoint(url, encoder, {"model": TINY_VIT, "in_chans": in_chans, "image_size": 32, "scale": 255.0,
                                   "mean": [0.5] * n, "std": [0.25] * n, "method": "random_init",
                                   "per_channel": per_channel, "embed_dim": 32, "channels": channels})
    return url


@pytest.fixture(scope="session")
def rgb_checkpoint(tmp_path_factory) -> str:
    """An untrained tiny ViT for RGB slides (32 px input: slide tiles are resized to it)."""
    return _save_tiny_vit(str(tmp_path_factory.mktemp("ckpt") / "rgb"), 3, False, [])


@pytest.fixture(scope="session")
def per_channel_checkpoint(tmp_path_factory) -> str:
    """An untrained channel-agnostic tiny ViT: any number of channels, one 32-d block each."""
    return _save_tiny_vit(str(tmp_path_factory.mktemp("ckpt") / "per_channel"), 1, True, [])
