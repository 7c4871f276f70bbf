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
``alpha * global + (1 - alpha) * local`` with alpha 0.75 (docs/methods/vicregl.md).

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

The VICReg criterion is :mod:`sslray.methods.vicreg_loss`; the view geometry, the matching and
the local loss are :mod:`sslray.methods.vicregl_local`; this module holds the views, the
networks and the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from sslray.data.transforms import AugmentConfig, augment, crop_boxes, foreground_boxes, random_boxes
from sslray.methods.base import Schedule, SSLMethod, StepOutput
from sslray.methods.dino import MultiCropConfig
from sslray.methods.registry import register_method
from sslray.methods.vicreg_loss import covariance_term, global_loss, variance_term, vicreg_loss
from sslray.methods.vicregl_local import (
    ViewGeometry,
    box_grid,
    local_loss,
    local_pair_loss,
    nearest_matches,
    random_flips,
    select_locations,
)
from sslray.models.vit_adapter import num_prefix_tokens, patch_grid

# the criterion and the local matching live in their own modules; re-exported where they were first defined
__all__ = ["VICRegL", "VICRegLConfig", "VICRegLViews", "ViewGeometry", "box_grid", "covariance_term", "global_loss",
           "local_loss", "local_pair_loss", "mlp", "nearest_matches", "pooled_and_maps", "random_flips",
           "select_locations", "variance_term", "vicreg_loss"]


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
        height, width = patch_grid(backbone, x.shape[-2:])
        tokens = features[:, num_prefix_tokens(backbone):]
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
