"""SpotEncoder: a set function of the valid tiles (no positions, padding masked out)."""

import pytest
import torch
from timm.models.vision_transformer import Block

from sslray.models.spot_encoder import SpotEncoder, SpotModelConfig


def _encoder(fused: bool = True) -> SpotEncoder:
    torch.manual_seed(0)
    enc = SpotEncoder(8, SpotModelConfig(dim=16, depth=2, num_heads=2, drop_path=0.0)).eval()
    for block in enc.blocks:
        block.attn.fused_attn = fused  # timm picks SDPA or its explicit softmax path: both must mask
    return enc


def test_built_from_timm_blocks_without_position_embedding():
    enc = _encoder()
    assert all(isinstance(b, Block) for b in enc.blocks) and len(enc.blocks) == 2
    assert not any("pos" in name for name, _ in enc.named_parameters())
    assert enc(torch.randn(3, 5, 8)).shape == (3, 16)


@pytest.mark.parametrize("fused", [True, False])
def test_output_is_invariant_to_tile_order(fused):
    enc = _encoder(fused)
    tokens = torch.randn(2, 9, 8)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    perm = torch.randperm(9)
    with torch.no_grad():
        a = enc(tokens, mask)
        b = enc(tokens[:, perm], mask[:, perm])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_padding_does_not_influence_the_output(fused):
    enc = _encoder(fused)
    spot = torch.randn(1, 4, 8)
    padded = torch.cat([spot, torch.randn(1, 5, 8) * 100], dim=1)
    padded[0, -1] = float("nan")  # whatever a padded slot holds
    mask = torch.tensor([[True] * 4 + [False] * 5])
    bigger = torch.randn(1, 9, 8)  # a fully occupied neighbour in the same batch
    with torch.no_grad():
        alone = enc(spot)
        batched = enc(torch.cat([padded, bigger]), torch.cat([mask, torch.ones(1, 9, dtype=torch.bool)]))
    assert torch.isfinite(batched).all()
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1:], enc(bigger), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone, enc(padded[:, :5]), atol=1e-3)  # unmasking a slot does change it


def test_gradients_reach_every_parameter():
    enc = _encoder().train()
    tokens = torch.randn(3, 6, 8)
    mask = torch.rand(3, 6) > 0.3
    mask[:, 0] = True
    enc(tokens, mask).pow(2).sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"model.dim \(10\) must be divisible by model.num_heads \(3\)"):
        SpotModelConfig(dim=10, num_heads=3)
    with pytest.raises(ValueError, match="model.drop_path"):
        SpotModelConfig(drop_path=1.0)
