"""VICRegL: VICReg on global embeddings and on matched local features.

Bardes, Ponce and LeCun, "VICRegL: Self-Supervised Learning of Local Visual Features",
NeurIPS 2022 (arXiv:2210.01571), built on VICReg (Bardes et al., arXiv:2105.04906).

*Global part*: VICReg between the expanded pooled embeddings of two views: invariance (MSE),
variance (a hinge keeping every dimension's std above 1 across the batch) and covariance
(decorrelated dimensions) -- the last two are what prevent collapse without negatives.
*Local part*: each location of the backbone's last feature map (patch tokens of a ViT, the
last conv stage of a CNN) goes through a small per-location projector, and VICReg is applied
between matched locations of two views. Locations are matched twice: by *position* (each
location's nearest location of the other view in image coordinates, known from the crop
boxes and flips) and by *feature* (its nearest neighbour in embedding space). The total is
``alpha * global + (1 - alpha) * local`` with alpha 0.75 (design.md §4).

Matching follows the authors' code (github.com/facebookresearch/VICRegL, ``main_vicregl.py``):
of every location's nearest match, the ``num_matches = (20, 4)`` closest are kept for the
position matching (20 from the first view of a pair, 4 back from the second: the paper's
"20 for global and 4 for local views"), and all of them for the feature matching
(``--l2_all_matches 1``). Unlike that code (``--no-flip-grid 1``) the location grids follow
the flips and 90° rotations, so position matches stay geometrically correct.

Differences from the paper's ImageNet recipe, chosen for cost: an expander of 2048-2048-2048
instead of 8192-8192-8192 (the 8192 expander alone has over 130M parameters, six times a ViT-S,
and the lightly example the SSL-Multiplexed-Imaging seed builds on uses 2048), and by default
two global views only, as the authors' ResNet-50 command (``--num-crops 2``); ``views.n_local``
adds small local crops (their ConvNeXt default is 2 x 224 + 6 x 96). Crops use scale 0.2-1,
lightly's VICRegLTransform default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from sslray.data.transforms import AugmentConfig, augment, crop_boxes, foreground_boxes, random_boxes
from sslray.methods.base import Schedule, SSLMethod, StepOutput
from sslray.methods.dino import MultiCropConfig
from sslray.methods.registry import register_method
from sslray.methods.simclr import gather_with_grad


@dataclass
class VICRegLViews(MultiCropConfig):
    """Two global crops (lightly's VICRegLTransform scale 0.2-1) and, optionally, local ones."""

    n_local: int = 0
    global_scale: tuple[float, float] = (0.2, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.2)


@dataclass
class VICRegLConfig:
    inv_coeff: float = 25.0
    var_coeff: float = 25.0
    cov_coeff: float = 1.0
    eps: float = 1e-4
    alpha: float = 0.75  # weight of the global loss; 1 - alpha for the local one
    expander_dims: tuple[int, ...] = (2048, 2048, 2048)  # paper: 8192-8192-8192
    local_dims: tuple[int, ...] = (512, 512, 512)  # the reference's --maps-mlp
    num_matches: tuple[int, int] = (20, 4)  # position matches kept, first->second and back
    l2_all_matches: bool = True  # feature matching keeps every location (False: num_matches)
    views: VICRegLViews = field(default_factory=VICRegLViews)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if min(self.inv_coeff, self.var_coeff, self.cov_coeff) < 0:
            raise ValueError("method.inv_coeff, method.var_coeff and method.cov_coeff must be >= 0")
        if self.eps <= 0:
            raise ValueError(f"method.eps must be > 0, got {self.eps}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"method.alpha must be in [0, 1], got {self.alpha}")
        for name in ("expander_dims", "local_dims"):
            dims = getattr(self, name)
            if not dims or min(dims) < 1:
                raise ValueError(f"method.{name} must be a non-empty list of sizes >= 1, got {list(dims)}")
        if len(self.num_matches) != 2 or min(self.num_matches) < 1:
            raise ValueError(f"method.num_matches must be two integers >= 1, got {list(self.num_matches)}")


# --- the VICReg criterion ------------------------------------------------------------


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean hinge ``relu(1 - std)`` of every dimension's std over dim 0 (gamma = 1)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances over dim 0, divided by the dimension.

    ``z`` is (N, D), or (N, K, D) for K matched locations: then one covariance per location
    slot over the N images, averaged over the slots (as the reference does for local maps).
    """
    x = (z - z.mean(dim=0, keepdim=True)).movedim(0, -2)  # (..., N, D)
    n, d = x.shape[-2:]
    cov = x.transpose(-1, -2) @ x / (n - 1)
    off_diagonal = cov.pow(2).sum((-2, -1)) - cov.diagonal(dim1=-2, dim2=-1).pow(2).sum(-1)
    return (off_diagonal / d).mean()


def vicreg_loss(
    z1: torch.Tensor, z2: torch.Tensor, inv: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg between two batches of embeddings, (N, D) or (N, K, D) row-aligned.

    Invariance is the MSE of this rank's pairs; variance and covariance see the global batch
    (rows of every data-parallel rank, gathered with gradients), since their statistics are
    what keeps the embedding from collapsing. Both are averaged over the two branches, the
    VICRegL code's convention (VICReg's sums the two covariance terms, a factor 2 on ``cov``).
    Returns the weighted loss and the unweighted ``inv``/``var``/``cov`` terms.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"vicreg_loss needs row-aligned embeddings, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    invariance = F.mse_loss(z1, z2)
    a, _ = gather_with_grad(z1)
    b, _ = gather_with_grad(z2)
    if a.shape[0] < 2:
        raise ValueError("vicreg_loss needs at least 2 samples for its variance and covariance terms")
    variance = (variance_term(a, eps) + variance_term(b, eps)) / 2
    covariance = (covariance_term(a) + covariance_term(b)) / 2
    loss = inv * invariance + var * variance + cov * covariance
    return loss, {"inv": invariance, "var": variance, "cov": covariance}


def global_loss(
    embeddings: list[torch.Tensor], inv: float, var: float, cov: float, eps: float = 1e-4
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg over several views: invariance between each of the 2 global views and every other
    view, variance/covariance of every view. With two views it is :func:`vicreg_loss`."""
    if len(embeddings) == 2:
        return vicreg_loss(embeddings[0], embeddings[1], inv, var, cov, eps)
    pairs = [(i, j) for i in range(2) for j in range(len(embeddings)) if j != i]
    invariance = torch.stack([F.mse_loss(embeddings[i], embeddings[j]) for i, j in pairs]).mean()
    gathered = [gather_with_grad(z)[0] for z in embeddings]
    variance = torch.stack([variance_term(z, eps) for z in gathered]).mean()
    covariance = torch.stack([covariance_term(z) for z in gathered]).mean()
    loss = inv * invariance + var * variance + cov * covariance
    return loss, {"inv": invariance, "var": variance, "cov": covariance}


# --- local matching ------------------------------------------------------------------


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
    cfg: VICRegLConfig,
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
    maps: list[torch.Tensor], grids: list[torch.Tensor], cfg: VICRegLConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`local_pair_loss` between each of the 2 global views and every other view, averaged."""
    pairs = [(i, j) for i in range(2) for j in range(len(maps)) if j != i]
    results = [local_pair_loss(maps[i], maps[j], grids[i], grids[j], cfg) for i, j in pairs]
    loss = torch.stack([r[0] for r in results]).mean()
    terms = {name: sum(r[1][name] for r in results) / len(results) for name in ("inv", "var", "cov")}
    return loss, terms


# --- networks ------------------------------------------------------------------------


def mlp(in_dim: int, dims: tuple[int, ...]) -> nn.Sequential:
    """Linear-BatchNorm-ReLU blocks, then a last Linear without bias (the VICReg expander)."""
    layers: list[nn.Module] = []
    for hidden in dims[:-1]:
        layers += [nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        in_dim = hidden
    layers.append(nn.Linear(in_dim, dims[-1], bias=False))
    return nn.Sequential(*layers)


def pooled_and_maps(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of a timm backbone -> (its pooled ``forward`` output, (B, h, w, C) feature map).

    A ViT's map is its patch tokens on the patch grid (prefix tokens dropped); a CNN's is its
    last stage (``forward_features``, NCHW). ``forward_head(pre_logits=True)`` pools exactly as
    the exported encoder's ``forward`` does.
    """
    features = backbone.forward_features(x)
    pooled = backbone.forward_head(features, pre_logits=True)
    if features.ndim == 3:
        height, width = backbone.patch_embed.dynamic_feat_size(tuple(x.shape[-2:]))
        tokens = features[:, getattr(backbone, "num_prefix_tokens", 0):]
        if tokens.shape[1] != height * width:
            raise ValueError(f"{tokens.shape[1]} patch tokens do not form a {height}x{width} grid")
        return pooled, tokens.reshape(x.shape[0], height, width, -1)
    if features.ndim == 4:
        return pooled, features.permute(0, 2, 3, 1)
    raise ValueError(f"vicregl needs a spatial feature map, got forward_features of shape {tuple(features.shape)}")


@register_method("vicregl")
class VICRegL(SSLMethod):
    """VICReg on expanded global embeddings + VICReg on matched local features."""

    Config = VICRegLConfig
    summary = "VICReg on global embeddings and on location/feature-matched local features (Bardes et al. 2022)"

    def __init__(self, backbone: nn.Module, cfg: VICRegLConfig, schedule: Schedule) -> None:
        super().__init__(backbone, cfg, schedule)
        self.expander = mlp(self.embed_dim, tuple(cfg.expander_dims)) if cfg.alpha > 0 else None
        self.local_projector = mlp(self.embed_dim, tuple(cfg.local_dims)) if cfg.alpha < 1 else None
        self._photometric = replace(cfg.augment, hflip=0.0, vflip=0.0, rot90=False)
        self._geometry: list[ViewGeometry] = []  # of the views of the last make_views call

    def make_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Crops of kept boxes, flipped by :func:`random_flips`, then the photometric augmentations.

        The boxes and flips are stored for the next ``forward``: they locate every feature
        cell in the image, which the position matching needs.
        """
        v = self.cfg.views
        views, self._geometry = [], []
        for size, scale in [(v.global_size, v.global_scale)] * 2 + [(v.local_size, v.local_scale)] * v.n_local:
            boxes = self._boxes(images, scale)
            crop, flips = random_flips(crop_boxes(images, boxes, size), self.cfg.augment)
            views.append(augment(crop, self._photometric))
            self._geometry.append(ViewGeometry(boxes.to(images.device), *flips))
        return views

    def _boxes(self, images: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
        """Random crop boxes; with ``augment.min_foreground``, boxes that contain cells."""
        if self.cfg.augment.min_foreground > 0:
            return foreground_boxes(images, scale, (3 / 4, 4 / 3), self.cfg.augment.min_foreground)
        b, _, h, w = images.shape
        return random_boxes(b, h, w, scale)

    def forward(self, views: list[torch.Tensor], step: int) -> StepOutput:
        pooled, maps = zip(*(pooled_and_maps(self.backbone, v) for v in views), strict=True)
        loss, metrics = views[0].new_zeros(()), {}
        if self.expander is not None:
            g_loss, g_terms = global_loss([self.expander(p) for p in pooled], self.cfg.inv_coeff,
                                          self.cfg.var_coeff, self.cfg.cov_coeff, self.cfg.eps)
            loss = loss + self.cfg.alpha * g_loss
            metrics.update({"global_loss": g_loss, **{f"global_{k}": t for k, t in g_terms.items()}})
        if self.local_projector is not None:
            local_maps = [self._project_locations(m) for m in maps]
            grids = [g.grid(*m.shape[1:3]) for g, m in zip(self._check_geometry(views), local_maps, strict=True)]
            l_loss, l_terms = local_loss(local_maps, grids, self.cfg)
            loss = loss + (1 - self.cfg.alpha) * l_loss
            metrics.update({"local_loss": l_loss, **{f"local_{k}": t for k, t in l_terms.items()}})
        values = torch.stack([t.detach().float() for t in metrics.values()]).tolist()  # one device sync
        return StepOutput(loss, dict(zip(metrics, values)), features=pooled[0].detach())

    def _project_locations(self, maps: torch.Tensor) -> torch.Tensor:
        """The local projector on every location (its BatchNorm over all locations of the batch)."""
        b, h, w, c = maps.shape
        return self.local_projector(maps.reshape(b * h * w, c)).reshape(b, h, w, -1)

    def _check_geometry(self, views: list[torch.Tensor]) -> list[ViewGeometry]:
        geometry = self._geometry
        if len(geometry) != len(views) or any(g.boxes.shape[0] != v.shape[0] for g, v in zip(geometry, views)):
            raise RuntimeError("vicregl.forward needs the views of its own make_views call "
                               "(their crop boxes locate the local features)")
        return geometry

    def trainable_modules(self) -> list[nn.Module]:
        return [m for m in (self.backbone, self.expander, self.local_projector) if m is not None]
