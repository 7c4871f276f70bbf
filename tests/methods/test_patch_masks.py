"""Block-wise and random patch masks: counts, blockiness, probability, ratio, reproducibility."""

import random

import torch

from sslray.methods.patch_masks import block_mask, ibot_masks, random_mask


def test_block_mask_masks_at_most_the_target_in_blocks():
    rng = random.Random(0)
    for target in (1, 20, 58, 98):
        mask = block_mask((14, 14), target, rng)
        assert mask.shape == (14, 14) and 0 < mask.sum() <= target
    # blocks: far fewer masked-unmasked borders than scattered patches of the same count
    mask = block_mask((14, 14), 58, random.Random(1))
    scattered = random_mask((14, 14), int(mask.sum()), random.Random(1))

    def borders(m):
        return int((m[1:] != m[:-1]).sum() + (m[:, 1:] != m[:, :-1]).sum())

    assert borders(mask) < borders(scattered) / 2


def test_random_mask_is_exact():
    assert random_mask((4, 5), 7, random.Random(0)).sum() == 7


def test_ibot_masks_probability_and_ratio():
    torch.manual_seed(0)
    assert not ibot_masks(16, (4, 4), (0.1, 0.5), prob=0.0).any()
    masks = ibot_masks(64, (14, 14), (0.1, 0.5), prob=1.0, shape="random")
    counts = masks.sum(1)
    assert masks.shape == (64, 196) and masks.dtype == torch.bool
    assert (counts >= int(0.1 * 196)).all() and (counts <= int(0.5 * 196)).all()
    half = ibot_masks(400, (4, 4), (0.25, 0.5), prob=0.5)
    assert 0.35 < half.any(1).float().mean().item() < 0.65
    torch.manual_seed(3)
    again = ibot_masks(8, (6, 6), (0.1, 0.5), prob=0.5)
    torch.manual_seed(3)
    assert torch.equal(again, ibot_masks(8, (6, 6), (0.1, 0.5), prob=0.5))
