"""Slide-level multiple-instance learning heads over padded bags of tile embeddings (pure torch).

A bag is a slide (or patient) of tiles: ``x`` (B, N, D) with ``mask`` (B, N), True for a real tile.
Every head maps ``forward(x, mask) -> (B, n_outputs)`` logits and ``attention(x, mask) -> (B, N)``
tile weights for the attention picture, zero at padding. Padding never changes a bag's output:
padded tiles are masked out of every mean, softmax, max and sort. Defaults follow
HistoSSLscaling's configurations (docs/protocols.md, "MIL over bags of tiles").

Heads are looked up by name in ``MIL_HEADS``; ``build_head`` also loads the heads that live in
their own modules (TransMIL), which register themselves on import.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sslray.registry import Registry

MIL_HEADS: Registry[type[nn.Module]] = Registry("MIL head")
# Heads kept in their own module; imported by name so that they can import this registry
# without an import cycle (the same registration-by-import as sslray.evaluate.protocols).
HEAD_MODULES = ("sslray.evaluate.transmil",)


def heads() -> Registry[type[nn.Module]]:
    """The registry with every head in it, those of ``HEAD_MODULES`` included."""
    for module in HEAD_MODULES:
        importlib.import_module(module)
    return MIL_HEADS


def build_head(name: str, in_dim: int, n_outputs: int, **options) -> nn.Module:
    """The head registered as ``name``; an unknown name raises the registry's KeyError listing the names."""
    return heads().get(name)(in_dim, n_outputs, **options)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU,
        dropout: float = 0.0) -> nn.Sequential:
    """Linear layers through ``hidden`` with ``activation`` (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), activation()]
        layers += [nn.Dropout(dropout)] if dropout else []
        in_dim = width
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


def full_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    """``mask`` as a bool (B, N) tensor; no mask means every tile is real."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return mask.to(device=x.device, dtype=torch.bool)


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Softmax over ``dim`` with masked entries at exactly zero (a bag with no tile gets all zeros, not NaN)."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return filled.softmax(dim) * mask


def pick_output(scores: Tensor, mask: Tensor, output: int | None) -> Tensor:
    """(B, N, O) per-output tile scores -> (B, N): one output's, or their mean; zero at padding."""
    chosen = scores.mean(-1) if output is None else scores[..., output]
    return chosen * mask


@MIL_HEADS.register("mean_pool")
class MeanPool(nn.Module):
    """A masked mean of the tiles, then a linear layer: the baseline every other head must beat."""

    def __init__(self, in_dim: int, n_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, n_outputs)

    def attention(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Uniform weights 1/n over a bag's n real tiles."""
        mask = full_mask(x, mask).to(x.dtype)
        return mask / mask.sum(1, keepdim=True).clamp(min=1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        weights = self.attention(x, mask)
        return self.linear(torch.einsum("bn,bnd->bd", weights, x))


def extreme_scores(scores: Tensor, mask: Tensor, k: int, largest: bool) -> Tensor:
    """The ``k`` highest (or lowest) real scores per bag and output, sorted: (B, N, O) -> (B, k, O).

    Padded tiles sort after every real one and are never picked. A bag with fewer than ``k``
    real tiles repeats its last (least extreme) real score in the missing positions, so the
    head MLP always sees ``k`` values and a bag's output does not depend on the padded length.
    """
    if k == 0:
        return scores.new_zeros(scores.shape[0], 0, scores.shape[2])
    bound = torch.finfo(scores.dtype).max
    filled = scores.masked_fill(~mask[..., None], -bound if largest else bound)
    ordered = filled.sort(dim=1, descending=largest).values
    last = (mask.sum(1, keepdim=True) - 1).clamp(min=0)
    index = torch.minimum(torch.arange(k, device=scores.device)[None], last)
    return ordered.gather(1, index[..., None].expand(-1, -1, scores.shape[2]))


@MIL_HEADS.register("chowder")
class Chowder(nn.Module):
    """Chowder (Courtiol et al. 2018): one score per tile and output, the extreme scores, a head MLP.

    The head MLP is shared by the outputs: it reads each output's ``n_top`` highest and
    ``n_bottom`` lowest tile scores and gives that output's logit.
    """

    def __init__(self, in_dim: int, n_outputs: int, n_top: int = 10, n_bottom: int = 10,
                 tiles_hidden: Sequence[int] = (128,), mlp_hidden: Sequence[int] = (128, 64),
                 activation: type[nn.Module] = nn.Sigmoid, dropout: float = 0.0) -> None:
        super().__init__()
        if n_top + n_bottom < 1:
            raise ValueError("Chowder needs n_top + n_bottom >= 1")
        self.n_top, self.n_bottom = n_top, n_bottom
        self.score = mlp(in_dim, tiles_hidden, n_outputs, activation, dropout)
        self.head = mlp(n_top + n_bottom, mlp_hidden, 1, activation, dropout)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def attention(self, x: Tensor, mask: Tensor | None = None, output: int | None = None) -> Tensor:
        """The tile scores of ``output`` (the mean over outputs by default), zero at padding."""
        mask = full_mask(x, mask)
        return pick_output(self.score(x), mask, output)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = full_mask(x, mask)
        scores = self.score(x)
        top = extreme_scores(scores, mask, self.n_top, largest=True)
        bottom = extreme_scores(scores, mask, self.n_bottom, largest=False)
        extremes = torch.cat([top, bottom], dim=1).transpose(1, 2)  # (B, O, n_top + n_bottom)
        return self.head(extremes).squeeze(-1)


@MIL_HEADS.register("abmil")
class ABMIL(nn.Module):
    """Gated-attention MIL (Ilse et al. 2018): tiles embedded to ``hidden``, softmax-weighted sum, head MLP.

    Attention score a = w^T (tanh(V h) * sigmoid(U h)) on the embedded tile h.
    """

    def __init__(self, in_dim: int, n_outputs: int, hidden: int = 128, mlp_hidden: Sequence[int] = (128, 64),
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.tanh_branch = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.gate_branch = nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid())
        self.score = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)
        self.head = mlp(hidden, mlp_hidden, n_outputs, nn.ReLU, dropout)

    def _weights(self, h: Tensor, mask: Tensor) -> Tensor:
        logits = self.score(self.dropout(self.tanh_branch(h) * self.gate_branch(h))).squeeze(-1)
        return masked_softmax(logits, mask)

    def attention(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The softmax attention over a bag's real tiles (sums to 1)."""
        return self._weights(self.embed(x), full_mask(x, mask))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.embed(x)
        weights = self._weights(h, full_mask(x, mask))
        return self.head(torch.einsum("bn,bnd->bd", weights, h))


@MIL_HEADS.register("dsmil")
class DSMIL(nn.Module):
    """Dual-stream MIL (Li et al. 2021): a max-instance stream and a bag stream around the critical tile.

    Per output, the tile with the highest instance logit is the critical instance; every tile
    attends to it by the inner product of their queries (scaled by 1/sqrt(d), masked softmax);
    the attention-weighted values make the bag embedding, which a head MLP over all outputs'
    embeddings (as DSMIL's Conv1d over outputs, with hidden layers) turns into bag logits.
    Output = 0.5 * (max instance logit + bag logit).
    """

    def __init__(self, in_dim: int, n_outputs: int, d_values: int = 32, d_queries: int = 32,
                 hidden: Sequence[int] = (200, 100), activation: type[nn.Module] = nn.Sigmoid,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.instance = mlp(in_dim, hidden, n_outputs, activation, dropout)
        self.queries = mlp(in_dim, hidden, d_queries, activation, dropout)
        self.values = nn.Linear(in_dim, d_values)
        self.bag = mlp(n_outputs * d_values, hidden, n_outputs, activation, dropout)

    def _streams(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(max instance logits (B, O), attention to the critical instances (B, N, O))."""
        instance = self.instance(x).masked_fill(~mask[..., None], torch.finfo(x.dtype).min)
        top, critical = instance.max(dim=1)  # (B, O)
        queries = self.queries(x)  # (B, N, Dq)
        critical_q = queries.gather(1, critical[..., None].expand(-1, -1, queries.shape[-1]))  # (B, O, Dq)
        logits = queries @ critical_q.transpose(1, 2) / math.sqrt(queries.shape[-1])
        return top, masked_softmax(logits, mask[..., None])

    def attention(self, x: Tensor, mask: Tensor | None = None, output: int | None = None) -> Tensor:
        """The bag stream's attention of ``output`` (the mean over outputs by default); sums to 1."""
        mask = full_mask(x, mask)
        return pick_output(self._streams(x, mask)[1], mask, output)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = full_mask(x, mask)
        top, weights = self._streams(x, mask)
        pooled = weights.transpose(1, 2) @ self.values(x)  # (B, O, Dv)
        return 0.5 * (top + self.bag(pooled.flatten(1)))
