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
