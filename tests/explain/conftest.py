"""Fixtures of the explanation tests: untrained tiny checkpoints (ViT, channel-agnostic ViT, ResNet) for
the tiny two-channel store (DNA, cytoplasm; 64 px tiles of 128 px fields), and a head for the ResNet."""

import numpy as np
import pytest

TINY_VIT = {"name": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4}}
TINY_RESNET = {"name": "resnet10t", "kwargs": {}}


def save_tiny(url: str, model: dict, in_chans: int, per_channel: bool, channels: list[str], embed_dim: int,
              image_size: int = 32) -> str:
    import torch

    from sslray.artifacts.checkpoint import save_checkpoint
    from sslray.models.backbones import BackboneConfig, create_backbone

    torch.manual_seed(0)
    encoder = create_backbone(BackboneConfig(**model), in_chans)
    n = 1 if per_channel else in_chans
    save_checkpoint(url, encoder, {"model": model, "in_chans": in_chans, "image_size": image_size, "scale": 255.0,
                                   "mean": [0.5] * n, "std": [0.25] * n, "method": "random_init",
                                   "per_channel": per_channel, "embed_dim": embed_dim, "channels": channels})
    return url


@pytest.fixture(scope="session")
def vit_checkpoint(tmp_path_factory) -> str:
    return save_tiny(str(tmp_path_factory.mktemp("ckpt") / "vit"), TINY_VIT, 2, False, ["DNA", "cytoplasm"], 32)


@pytest.fixture(scope="session")
def per_channel_vit(tmp_path_factory) -> str:
    return save_tiny(str(tmp_path_factory.mktemp("ckpt") / "vit_pc"), TINY_VIT, 1, True, [], 32)


@pytest.fixture(scope="session")
def rgb_vit(tmp_path_factory) -> str:
    return save_tiny(str(tmp_path_factory.mktemp("ckpt") / "vit_rgb"), TINY_VIT, 3, False, [], 32)


@pytest.fixture(scope="session")
def resnet_checkpoint(tmp_path_factory) -> str:
    return save_tiny(str(tmp_path_factory.mktemp("ckpt") / "resnet"), TINY_RESNET, 2, False, ["DNA", "cytoplasm"],
                     512, image_size=64)


@pytest.fixture(scope="session")
def resnet_head(tmp_path_factory) -> str:
    from sslray.artifacts.linear_head import LinearHead, save_head

    rng = np.random.default_rng(0)
    head = LinearHead(rng.normal(size=(2, 512)), np.zeros(2), ["cells", "empty"], l2_normalized=True)
    return save_head(str(tmp_path_factory.mktemp("head") / "head.safetensors"), head)
