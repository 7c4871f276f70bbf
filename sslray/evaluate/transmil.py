"""TransMIL (Shao et al. 2021): a transformer over a bag's tiles laid out on a square grid (pure torch).

Tiles are projected to ``dim``; each bag's n real tiles are made square (side ceil(sqrt(n))) by
repeating its first tiles, and a class token leads the sequence. Two transformer layers,
with a PPEG (depthwise 7, 5 and 3 convolutions plus identity on the grid) between them, then
a LayerNorm and a linear head on the class token (docs/protocols.md, "MIL over bags of tiles").

Padding invariance in a batch: every bag's square sits in the top-left corner of the batch's
largest grid, the rest of the grid is zeros for the convolutions (as the zero padding a bag
alone gets) and masked out of attention. Attention is exact (``nn.MultiheadAttention``) or,
with ``nystrom=True``, a masked Nyström approximation (Xiong et al. 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslray.evaluate.mil_heads import MIL_HEADS, full_mask, masked_softmax, mlp


def square_layout(mask: Tensor) -> tuple[Tensor, Tensor, int]:
    """Each bag's tiles on a square grid: (tile index per grid slot (B, S*S), slot is used (B, S*S), S).

    A bag of n real tiles fills the top-left side x side square, side = ceil(sqrt(n)), row by
    row with its real tiles in order, then its first tiles again; S is the largest side.
    """
    n = mask.sum(1)
    side = torch.sqrt(n.double()).floor().long()
    side = side + (side * side < n).long()
    grid = max(int(side.max()), 1) if n.numel() else 1
    row = torch.arange(grid, device=mask.device).repeat_interleave(grid)
    col = torch.arange(grid, device=mask.device).repeat(grid)
    used = (row[None] < side[:, None]) & (col[None] < side[:, None])
    rank = (row[None] * side[:, None] + col[None]) % n.clamp(min=1)[:, None]
    real_first = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    return real_first.gather(1, rank), used, grid


def segment_means(t: Tensor, keep: Tensor, landmarks: int) -> tuple[Tensor, Tensor]:
    """Landmarks of (B, H, L, d) over the kept tokens: (B, H, M, d) and which landmarks exist (B, M).

    A bag of n kept tokens gets min(n, landmarks) landmarks, each the mean of a run of
    consecutive kept tokens; with n <= landmarks every token is its own landmark, and the
    approximation is exact.
    """
    n = keep.sum(1)
    count = n.clamp(max=landmarks)
    width = max(int(count.max()), 1)
    rank = keep.long().cumsum(1) - 1
    segment = (rank * count[:, None]) // n.clamp(min=1)[:, None]
    segment = torch.where(keep, segment, width)
    members = F.one_hot(segment, width + 1)[..., :width].to(t.dtype)  # (B, L, M)
    means = torch.einsum("bhld,blm->bhmd", t, members)
    means = means / members.sum(1).clamp(min=1)[:, None, :, None]
    return means, torch.arange(width, device=t.device)[None] < count[:, None]


def iterative_pinv(a: Tensor, iterations: int) -> Tensor:
    """Moore-Penrose pseudo-inverse of each (M, M) matrix by Xiong et al.'s iteration.

    The starting scale is taken per matrix (not over the batch) so that a bag's result does
    not depend on the bags beside it.
    """
    rows = a.abs().sum(-1).amax(-1, keepdim=True)[..., None]
    cols = a.abs().sum(-2).amax(-1, keepdim=True)[..., None]
    z = a.transpose(-1, -2) / (rows * cols)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class NystromAttention(nn.Module):
    """Masked Nyström self-attention: softmax(Q K~) pinv(softmax(Q~ K~)) softmax(Q~ K) V.

    Landmarks Q~, K~ are segment means of the real tokens only. Missing landmarks (bags
    shorter than the batch's landmark count) get identity rows in the middle matrix and zero
    weight elsewhere, so the pseudo-inverse of a bag's real block is the same with or
    without them. Lucidrains' residual depthwise convolution on V is left out.
    """

    def __init__(self, dim: int, heads: int, landmarks: int = 256, pinv_iterations: int = 6) -> None:
        super().__init__()
        self.heads, self.landmarks, self.pinv_iterations = heads, landmarks, pinv_iterations
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return q * (dim // self.heads) ** -0.5, k, v

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        keep = ~pad
        q_marks, exists = segment_means(q, keep, self.landmarks)
        k_marks, _ = segment_means(k, keep, self.landmarks)
        marks = exists[:, None, None, :]
        left = masked_softmax(q @ k_marks.transpose(-1, -2), marks, dim=-1)
        middle = masked_softmax(q_marks @ k_marks.transpose(-1, -2), marks, dim=-1)
        eye = torch.eye(middle.shape[-1], dtype=x.dtype, device=x.device)
        middle = torch.where(exists[:, None, :, None], middle, eye)
        right = masked_softmax(q_marks @ k.transpose(-1, -2), keep[:, None, None, :], dim=-1)
        right = right * exists[:, None, :, None]
        mixed = left @ (iterative_pinv(middle, self.pinv_iterations) @ (right @ v))
        return self.out(mixed.transpose(1, 2).flatten(2))

    def cls_weights(self, x: Tensor, pad: Tensor) -> Tensor:
        """The exact softmax attention of token 0 (the class token) to every token, mean over heads: (B, L)."""
        q, k, _ = self._qkv(x)
        scores = q[:, :, :1] @ k.transpose(-1, -2)
        return masked_softmax(scores, ~pad[:, None, None, :], dim=-1).mean(1)[:, 0]


class ExactAttention(nn.Module):
    """``nn.MultiheadAttention`` behind the call NystromAttention answers: (tokens, pad) -> tokens."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        return self.mha(x, x, x, key_padding_mask=pad, need_weights=False)[0]

    def cls_weights(self, x: Tensor, pad: Tensor) -> Tensor:
        """The class token's attention to every token, mean over heads: (B, L)."""
        return self.mha(x[:, :1], x, x, key_padding_mask=pad, need_weights=True)[1][:, 0]


class TransLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(norm(x)), then x + MLP(norm(x)) (no MLP at mlp_ratio 0)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, nystrom: bool, landmarks: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(dim, heads, landmarks) if nystrom else ExactAttention(dim, heads, dropout)
        width = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), mlp(dim, [width], dim, nn.GELU, dropout)) if width else None

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        x = x + self.attn(self.norm(x), pad)
        return x + self.mlp(x) if self.mlp is not None else x

    def cls_weights(self, x: Tensor, pad: Tensor) -> Tensor:
        return self.attn.cls_weights(self.norm(x), pad)


class PPEG(nn.Module):
    """Pyramid position encoding: the grid plus depthwise 7x7, 5x5 and 3x3 convolutions of it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, tokens: Tensor, used: Tensor, grid: int) -> Tensor:
        """(B, 1 + S*S, C) with the class token first; unused slots are zeroed before the convolutions."""
        cls, cells = tokens[:, :1], tokens[:, 1:] * used[..., None]
        image = cells.transpose(1, 2).reshape(cells.shape[0], cells.shape[2], grid, grid)
        image = image + sum(conv(image) for conv in self.convs)
        return torch.cat([cls, image.flatten(2).transpose(1, 2)], dim=1)


@MIL_HEADS.register("transmil")
class TransMIL(nn.Module):
    """TransMIL head; ``attention`` is the class token's attention to the tiles in the last layer.

    That attention is exact softmax attention even with ``nystrom=True`` (one query row is
    cheap); a tile repeated to fill the square gets the sum over its copies, and the weights
    are renormalised over the tiles (the class token's attention to itself left out), so they
    sum to 1.
    """

    def __init__(self, in_dim: int, n_outputs: int, dim: int = 512, heads: int = 8, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, nystrom: bool = False, landmarks: int = 256) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.layer1 = TransLayer(dim, heads, mlp_ratio, dropout, nystrom, landmarks)
        self.ppeg = PPEG(dim)
        self.layer2 = TransLayer(dim, heads, mlp_ratio, dropout, nystrom, landmarks)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_outputs)

    def _before_last(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(tokens entering the last layer, their padding (True = ignore), tile index per grid slot)."""
        index, used, grid = square_layout(mask)
        h = self.embed(x)
        cells = h.gather(1, index[..., None].expand(-1, -1, h.shape[-1])) * used[..., None]
        tokens = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), cells], dim=1)
        pad = torch.cat([used.new_zeros(used.shape[0], 1), ~used], dim=1)
        tokens = self.ppeg(self.layer1(tokens, pad), used, grid)
        return tokens, pad, index

    def attention(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = full_mask(x, mask)
        tokens, pad, index = self._before_last(x, mask)
        to_cells = self.layer2.cls_weights(tokens, pad)[:, 1:] * ~pad[:, 1:]
        weights = torch.zeros(mask.shape, dtype=to_cells.dtype, device=x.device).scatter_add(1, index, to_cells)
        return weights * mask / weights.sum(1, keepdim=True).clamp(min=torch.finfo(weights.dtype).tiny)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = full_mask(x, mask)
        tokens, pad, _ = self._before_last(x, mask)
        return self.head(self.norm(self.layer2(tokens, pad)[:, 0]))
