"""SimCLR: contrastive learning between two augmented views of each image.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020 (arXiv:2002.05709). Each image's two views are pulled together and pushed away
from every other view in the *global* batch (NT-Xent), so negatives are gathered from all
data-parallel workers; more negatives is what makes SimCLR work at all.

Defaults follow the CellPaintSSL and SSL-Multiplexed-Imaging seeds (docs/methods/simclr.md):
temperature 0.2 within their 0.2-0.5 range, a 2-layer MLP projector to 128 dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sslray.data.pairs import PairPolicy
from sslray.data.transforms import AugmentConfig, augment, random_resized_crop
from sslray.methods.base import Schedule, SSLMethod, StepOutput
from sslray.methods.registry import register_method


@dataclass
class SimCLRConfig:
    temperature: float = 0.2
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    view_size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"method.temperature must be > 0, got {self.temperature}")
        if self.proj_hidden_dim < 1 or self.proj_dim < 1:
            raise ValueError("method.proj_hidden_dim and method.proj_dim must be >= 1")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"method.scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")


def gather_with_grad(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows (gradients flow back to each rank's own rows) and this rank's offset."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(z)
    return torch.cat(parts), dist.get_rank() * z.shape[0]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy over a global batch of view pairs.

    For local view ``z1[i]`` the positive is ``z2[i]``; the negatives are every other view of
    every rank, both ``z1`` and ``z2`` sides. Symmetric in the two views.
    """
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    all1, offset = gather_with_grad(z1)
    all2, _ = gather_with_grad(z2)
    labels = torch.arange(z1.shape[0], device=z1.device) + offset
    self_mask = F.one_hot(labels, all1.shape[0]).bool()

    def one_side(a: torch.Tensor, same: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        to_other = a @ other.T / temperature  # the positive sits at column ``labels``
        to_same = (a @ same.T / temperature).masked_fill(self_mask, float("-inf"))  # not itself
        return F.cross_entropy(torch.cat([to_other, to_same], dim=1), labels)

    return (one_side(z1, all1, all2) + one_side(z2, all2, all1)) / 2


def projector(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


@register_method("simclr")
class SimCLR(SSLMethod):
    """Two views per image, an MLP projector, NT-Xent with negatives from all workers."""

    Config = SimCLRConfig
    summary = "contrastive NT-Xent over two views, negatives from all workers (Chen et al. 2020)"

    def __init__(self, backbone: nn.Module, cfg: SimCLRConfig, schedule: Schedule) -> None:
        super().__init__(backbone, cfg, schedule)
        self.projector = projector(self.embed_dim, cfg.proj_hidden_dim, cfg.proj_dim)

    def make_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [augment(self._crop(images), self.cfg.augment) for _ in range(2)]

    def _crop(self, images: torch.Tensor) -> torch.Tensor:
        return random_resized_crop(images, self.cfg.view_size, self.cfg.scale,
                                   min_foreground=self.cfg.augment.min_foreground)

    def forward(self, views: list[torch.Tensor], step: int) -> StepOutput:
        features = self.backbone(torch.cat(views[:2]))  # one pass: BatchNorm sees both views
        z1, z2 = self.projector(features).chunk(2)
        loss = nt_xent(z1, z2, self.cfg.temperature)
        return StepOutput(loss, features=features[: len(views[0])].detach())

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projector]


@dataclass
class MPCSConfig(SimCLRConfig):
    pair_policy: str = "ordered"  # ordered (40->100->200->400) | random | fixed
    fixed_pair: tuple[float, float] = (200.0, 400.0)  # the magnifications of the "fixed" policy

    def __post_init__(self) -> None:
        super().__post_init__()
        self.policy  # noqa: B018  (validates pair_policy)

    @property
    def policy(self) -> PairPolicy:
        return PairPolicy(self.pair_policy, tuple(self.fixed_pair))


@register_method("mpcs")
class MPCS(SimCLR):
    """SimCLR whose positive pair is one field at two magnifications (Chhipa et al. 2023).

    Magnification Prior Contrastive Similarity, arXiv:2203.07707 (the MPCS seed, BreakHis).
    The training data are pairs drawn from the manifest's ``field_id``/``magnification``
    (``sslray.data.pairs``); each side gets its own crop and augmentation.
    """

    Config = MPCSConfig
    summary = "contrast one field at two magnifications, ordered/random/fixed pairs (Chhipa et al. 2023)"
    needs_pairs = True

    def make_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.ndim != 5 or images.shape[1] != 2:
            raise ValueError(f"mpcs trains on magnification pairs (B, 2, C, H, W), got {tuple(images.shape)}; "
                             "the store needs field_id and magnification columns")
        return [augment(self._crop(images[:, side]), self.cfg.augment) for side in (0, 1)]
