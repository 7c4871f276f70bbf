"""Which patches a masked-image-modelling student does not see: BEiT/iBOT block masks.

Block-wise masking is BEiT's (Bao et al., "BEiT: BERT Pre-Training of Image Transformers",
ICLR 2022, arXiv:2106.08254, Algorithm 1), as iBOT (arXiv:2111.07832) uses it
(github.com/bytedance/ibot, ``loader.py``, ``ImageFolderMask``): rectangles rather than
scattered patches, so a hidden patch cannot be copied from its visible neighbours. Masks
are numpy grids drawn from a ``random.Random`` seeded from torch's RNG, so
``torch.manual_seed`` makes them reproducible.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch


def block_mask(grid: tuple[int, int], n_mask: int, rng: random.Random,
               aspect: tuple[float, float] = (0.3, 1 / 0.3)) -> np.ndarray:
    """BEiT/iBOT block-wise mask of at most ``n_mask`` patches on a (h, w) patch grid.

    Rectangles of random area and log-uniform aspect ratio are added until the target is
    reached or 10 tries in a row add nothing; a rectangle is kept only if it adds at least
    one and no more than the remaining number of patches. Blocks (not scattered patches)
    make the task semantic: a masked patch cannot be copied from its unmasked neighbours.
    """
    h, w = grid
    mask = np.zeros((h, w), dtype=bool)
    min_area = (min(h, w) // 3) ** 2  # iBOT's smallest block
    count = 0
    while count < n_mask:
        added = _add_block(mask, n_mask - count, min_area, aspect, rng)
        if added == 0:
            break
        count += added
    return mask


def _add_block(mask: np.ndarray, remaining: int, min_area: int, aspect: tuple[float, float],
               rng: random.Random) -> int:
    """Mask one random rectangle that adds 1..``remaining`` patches (10 tries); returns how many it added."""
    h, w = mask.shape
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(10):
        area = rng.uniform(min(min_area, remaining), remaining)
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        bh, bw = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if not (1 <= bh <= h and 1 <= bw <= w):
            continue
        top, left = rng.randint(0, h - bh), rng.randint(0, w - bw)
        block = mask[top:top + bh, left:left + bw]
        new = bh * bw - int(block.sum())
        if 0 < new <= remaining:
            block[...] = True
            return new
    return 0


def random_mask(grid: tuple[int, int], n_mask: int, rng: random.Random) -> np.ndarray:
    """Exactly ``n_mask`` patches chosen uniformly (iBOT's ``--pred_shape rand``)."""
    h, w = grid
    flat = np.zeros(h * w, dtype=bool)
    flat[rng.sample(range(h * w), n_mask)] = True
    return flat.reshape(h, w)


def ibot_masks(
    batch: int,
    grid: tuple[int, int],
    ratio: tuple[float, float],
    prob: float,
    shape: str = "block",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(batch, h*w) boolean masks: each crop is masked with probability ``prob``, at a
    ratio drawn from U(ratio), block-wise or at random. Seeded from torch's RNG so
    ``torch.manual_seed`` makes a run reproducible."""
    rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
    make = block_mask if shape == "block" else random_mask
    n_patches = grid[0] * grid[1]
    masks = np.zeros((batch, n_patches), dtype=bool)
    for i in range(batch):
        if rng.random() < prob:
            n_mask = int(rng.uniform(*ratio) * n_patches)
            masks[i] = make(grid, n_mask, rng).reshape(-1)
    return torch.from_numpy(masks)
