"""Grad-CAM: the map of a class peaks where the image holds what raises that class's logit; on a timm
ResNet it comes from layer4, per channel image for a channel-agnostic encoder, for the predicted class
by default; a head of the wrong width is refused."""

import numpy as np
import pytest
import timm
import torch
from torch import nn

from sslray.artifacts.checkpoint import CheckpointMeta
from sslray.artifacts.linear_head import LinearHead
from sslray.infer.encoder import encode
from sslray.explain.gradcam import head_logits, last_stage, tile_gradcam

CPU = torch.device("cpu")


def _meta(in_chans: int, per_channel: bool = False, embed_dim: int | None = None) -> CheckpointMeta:
    n = 1 if per_channel else in_chans
    return CheckpointMeta.from_json({"model": {"name": "resnet18"}, "in_chans": in_chans, "image_size": 32,
                                     "scale": 255.0, "mean": [0.0] * n, "std": [1.0] * n, "method": "random_init",
                                     "per_channel": per_channel, "embed_dim": embed_dim}, "test")


class BlobNet(nn.Module):
    """Channel 0 of its one conv stage is the brightness, channel 1 the darkness; the embedding is their mean."""

    def __init__(self) -> None:
        super().__init__()
        self.stage = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.stage.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
            self.stage.bias.copy_(torch.tensor([0.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.stage(x)).mean(dim=(2, 3))


def test_the_map_of_a_class_peaks_where_the_image_raises_its_logit():
    tile = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    tile[..., 2:8, 20:30] = 255  # a bright blob, top right
    head = LinearHead(np.eye(2), np.zeros(2), ["blob", "background"], l2_normalized=False)
    net = BlobNet()
    cams, target = tile_gradcam(net, tile, _meta(1, embed_dim=2), head, 0, CPU, layer=net.stage)
    assert cams.shape == (1, 1, 32, 32) and target.tolist() == [0]
    blob = np.zeros((32, 32), bool)
    blob[2:8, 20:30] = True
    assert cams[0, 0][blob].min() > 0 and cams[0, 0][~blob].max() == 0  # only the blob raises "blob"
    background, target = tile_gradcam(net, tile, _meta(1, embed_dim=2), head, None, CPU, layer=net.stage)
    assert target.tolist() == [1]  # most of the tile is dark: the head predicts background, which is explained
    assert background[0, 0][~blob].min() > 0 and background[0, 0][blob].max() == 0


def test_a_resnet_is_explained_at_layer4_per_channel_image_for_its_predicted_class():
    torch.manual_seed(0)
    resnet = timm.create_model("resnet18", num_classes=0, in_chans=1).eval()
    assert last_stage(resnet) is resnet.layer4
    rng = np.random.default_rng(0)
    head = LinearHead(rng.normal(size=(3, 2 * 512)), rng.normal(size=3), ["a", "b", "c"], l2_normalized=True,
                      per_channel=True)
    tiles = torch.from_numpy(rng.integers(0, 255, (4, 2, 64, 64), dtype=np.uint8))
    meta = _meta(1, per_channel=True, embed_dim=512)
    cams, target = tile_gradcam(resnet, tiles, meta, head, None, CPU)
    assert cams.shape == (4, 2, 1, 1) and (cams >= 0).all()  # 32 px input, reduction 32: one cell per channel
    with torch.no_grad():  # the embedding as sslray embed writes it: one L2-normalised block per channel
        blocks = nn.functional.normalize(encode(resnet, tiles, meta, CPU).reshape(4, 2, 512), dim=-1)
        expected = blocks.reshape(4, -1).numpy() @ head.weight.T + head.bias
    assert target.tolist() == expected.argmax(axis=1).tolist()
    assert [p.grad for p in resnet.parameters()] == [None] * len(list(resnet.parameters()))  # weights untouched


def test_a_head_of_another_width_is_refused_naming_both():
    head = LinearHead(np.zeros((2, 10)), np.zeros(2), ["a", "b"])
    with pytest.raises(ValueError, match="the head takes 10-d embeddings but the encoder gives 512-d ones"):
        head_logits(torch.zeros(1, 512), head, 512)


def test_a_model_without_feature_stages_is_refused():
    with pytest.raises(ValueError, match="BlobNet lists no feature stages"):
        last_stage(BlobNet())
