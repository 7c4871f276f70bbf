"""VICRegL's local criterion: where each feature cell lies, which cells match, VICReg between them.

Bardes, Ponce and LeCun, "VICRegL: Self-Supervised Learning of Local Visual Features",
NeurIPS 2022 (arXiv:2210.01571). Each location of a view's feature map is placed in
image coordinates from the view's crop box and flips (:class:`ViewGeometry`), then matched to
a location of the other view twice: by *position* (nearest in the image) and by *feature*
(nearest in embedding space); VICReg (:func:`~sslray.methods.vicreg_loss.vicreg_loss`) is
applied between matched locations. Matching follows the authors' code
(github.com/facebookresearch/VICRegL, ``main_vicregl.py``): of every location's nearest match,
the ``num_matches`` closest are kept for the position matching and, with ``l2_all_matches``,
all of them for the feature matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from sslray.data.transforms import AugmentConfig
from sslray.methods.vicreg_loss import vicreg_loss


class LocalLossConfig(Protocol):
    """The settings :func:`local_pair_loss` reads (``VICRegLConfig`` has them all)."""

    inv_coeff: float
    var_coeff: float
    cov_coeff: float
    eps: float
    num_matches: tuple[int, int]
    l2_all_matches: bool


def nearest_matches(distances: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, M) distances -> (B, k) input indices and (B, k) indices of their nearest candidate.

    Every input location is matched to its nearest candidate; the ``k`` inputs with the
    closest matches are kept (all of them for ``k=None``), in raster order as in the
    reference (the order sets which matches share a location slot's statistics).
    """
    nn_distance, nn_index = distances.min(dim=2)
    k = nn_distance.shape[1] if k is None else min(k, nn_distance.shape[1])
    keep = nn_distance.topk(k, dim=1, largest=False).indices.sort(dim=1).values
    return keep, nn_index.gather(1, keep)


def select_locations(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, L, D) features at (B, k) location indices -> (B, k, D)."""
    return maps.gather(1, index.unsqueeze(-1).expand(-1, -1, maps.shape[-1]))


def box_grid(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4) crop boxes ``x0, y0, x1, y1`` -> (B, height, width, 2) image coordinates ``(x, y)``
    of the centres of a ``height`` x ``width`` grid of cells spanning each box."""
    x0, y0, x1, y1 = boxes.unbind(1)
    fx = (torch.arange(width, dtype=boxes.dtype, device=boxes.device) + 0.5) / width
    fy = (torch.arange(height, dtype=boxes.dtype, device=boxes.device) + 0.5) / height
    xs = x0[:, None] + fx[None] * (x1 - x0)[:, None]  # (B, W)
    ys = y0[:, None] + fy[None] * (y1 - y0)[:, None]  # (B, H)
    return torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)


@dataclass
class ViewGeometry:
    """Where a view came from: its crop box in the image and the flips applied after cropping."""

    boxes: torch.Tensor  # (B, 4) x0, y0, x1, y1 in image pixels
    hflip: torch.Tensor  # (B,) bool, flipped along width
    vflip: torch.Tensor  # (B,) bool, flipped along height
    transpose: torch.Tensor  # (B,) bool, height and width swapped (a 90° rotation with a flip)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """Image coordinates of the view's ``height`` x ``width`` feature cells, (B, h, w, 2).

        The grid of the crop gets the view's own flips, in the order they hit the pixels, so
        cell (i, j) of the feature map is located where its pixels came from.
        """
        g = box_grid(self.boxes, height, width)
        g = torch.where(_b(self.hflip), g.flip(2), g)
        g = torch.where(_b(self.vflip), g.flip(1), g)
        return torch.where(_b(self.transpose), g.transpose(1, 2), g)


def _b(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, 1, 1, 1)


def random_flips(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The geometric part of :func:`augment` (flips, transpose), returning what it did."""
    b = images.shape[0]
    hflip = (torch.rand(b, generator=generator) < cfg.hflip).to(images.device)
    vflip = (torch.rand(b, generator=generator) < cfg.vflip).to(images.device)
    square = images.shape[-1] == images.shape[-2]
    transpose = (torch.rand(b, generator=generator) < (0.5 if cfg.rot90 and square else 0.0)).to(images.device)
    x = torch.where(_b(hflip), images.flip(-1), images)
    x = torch.where(_b(vflip), x.flip(-2), x)
    x = torch.where(_b(transpose), x.transpose(-1, -2), x)
    return x, (hflip, vflip, transpose)


def local_pair_loss(
    maps_a: torch.Tensor,
    maps_b: torch.Tensor,
    grid_a: torch.Tensor,
    grid_b: torch.Tensor,
    cfg: LocalLossConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg between matched locations of two views, (B, h, w, D) maps and (B, h, w, 2) grids.

    Feature-based plus position-based matching, each in both directions (averaged); the two
    matchings are summed, as in the reference.
    """
    a, b = maps_a.flatten(1, 2), maps_b.flatten(1, 2)
    with torch.no_grad():  # matches are indices: no gradient through the distances
        feature_d = torch.cdist(a.detach().float(), b.detach().float())
        position_d = torch.cdist(grid_a.flatten(1, 2).float(), grid_b.flatten(1, 2).float())
    l2_k = (None, None) if cfg.l2_all_matches else cfg.num_matches
    plans = [(feature_d, l2_k), (position_d, cfg.num_matches)]
    loss, terms = a.new_zeros(()), {"inv": 0.0, "var": 0.0, "cov": 0.0}
    for distances, (k_ab, k_ba) in plans:
        for x, y, d, k in ((a, b, distances, k_ab), (b, a, distances.transpose(1, 2), k_ba)):
            ix, iy = nearest_matches(d, k)
            part, part_terms = vicreg_loss(select_locations(x, ix), select_locations(y, iy),
                                           cfg.inv_coeff, cfg.var_coeff, cfg.cov_coeff, cfg.eps)
            loss = loss + part / 2
            terms = {name: terms[name] + part_terms[name] / 2 for name in terms}
    return loss, terms


def local_loss(
    maps: list[torch.Tensor], grids: list[torch.Tensor], cfg: LocalLossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`local_pair_loss` between each of the 2 global views and every other view, averaged."""
    pairs = [(i, j) for i in range(2) for j in range(len(maps)) if j != i]
    results = [local_pair_loss(maps[i], maps[j], grids[i], grids[j], cfg) for i, j in pairs]
    loss = torch.stack([r[0] for r in results]).mean()
    terms = {name: sum(r[1][name] for r in results) / len(results) for name in ("inv", "var", "cov")}
    return loss, terms
