"""Channel-agnostic DINO: single-channel views in training, per-channel embedding in order."""

import pytest
import torch

from sslray.artifacts.checkpoint_meta import CheckpointMeta, ModelSpec, pooled_stats
from sslray.infer.embed import encode
from sslray.methods import METHODS, Schedule, build_method
from sslray.methods.dino import DINOConfig, MultiCropConfig, random_channel
from sslray.models.backbones import BackboneConfig, create_backbone


def test_random_channel_takes_one_whole_channel_per_image():
    images = torch.arange(4 * 3, dtype=torch.float32).view(4, 3, 1, 1).expand(4, 3, 5, 5).contiguous()
    picked = random_channel(images, torch.Generator().manual_seed(0))
    assert picked.shape == (4, 1, 5, 5)
    for i in range(4):
        assert any(torch.equal(picked[i, 0], images[i, c]) for c in range(3))


def test_pooled_stats_are_the_stats_of_all_channels_together():
    torch.manual_seed(0)
    channels = [torch.randn(10_000) * s + m for m, s in ((0.1, 0.05), (0.5, 0.2), (0.3, 0.1))]
    mean, std = pooled_stats([float(c.mean()) for c in channels], [float(c.std(unbiased=False)) for c in channels])
    together = torch.cat(channels)
    assert mean[0] == pytest.approx(float(together.mean()), abs=1e-5)
    assert std[0] == pytest.approx(float(together.std(unbiased=False)), abs=1e-5)


def test_method_trains_a_one_channel_encoder_on_any_panel():
    cls = METHODS.get("channel_agnostic_dino")
    assert cls.channel_agnostic and not METHODS.get("dino").channel_agnostic
    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig("vit_tiny_patch16_224", {"patch_size": 8, "embed_dim": 32, "depth": 1,
                                                                       "num_heads": 2, "img_size": 32}), 1)
    cfg = DINOConfig(out_dim=16, hidden_dim=16, bottleneck_dim=8, views=MultiCropConfig(32, 16, 2))
    method = build_method("channel_agnostic_dino", cfg, backbone, Schedule(10))
    views = method.make_views(torch.rand(3, 5, 40, 40))  # a 5-marker panel
    assert [v.shape[1] for v in views] == [1, 1, 1, 1]
    assert torch.isfinite(method(views, 0).loss)


def test_per_channel_embedding_concatenates_channels_in_order():
    torch.manual_seed(0)
    encoder = create_backbone(BackboneConfig("resnet18"), 1).eval()
    meta = CheckpointMeta(ModelSpec("resnet18"), in_chans=1, image_size=32, scale=255.0, mean=[0.4], std=[0.2],
                          per_channel=True, embed_dim=512)
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        together = encode(encoder, images, meta, torch.device("cpu"))
        single = [encode(encoder, images[:, c : c + 1], meta, torch.device("cpu")) for c in range(3)]
    assert together.shape == (2, 3 * 512)
    torch.testing.assert_close(together, torch.cat(single, dim=1))
    swapped = encode(encoder, images[:, [1, 0, 2]], meta, torch.device("cpu"))
    assert not torch.allclose(swapped, together)  # channel order matters and is kept
