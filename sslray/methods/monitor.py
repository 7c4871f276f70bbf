"""Collapse monitor: is the encoder still producing informative embeddings?

SSL methods fail silently by collapse: every image maps to (nearly) the same vector, or to
a few directions. Two cheap statistics of a batch of embeddings catch both:

- ``feature_std``: the mean per-dimension standard deviation of the L2-normalised
  embeddings (SimSiam, Chen & He 2021, arXiv:2011.10566). Healthy embeddings spread over the
  sphere and give about ``1/sqrt(D)``; complete collapse gives 0.
- ``effective_rank``: ``exp`` of the entropy of the normalised singular values of the centred
  batch (RankMe, Garrido et al. 2023, arXiv:2210.02885). Dimensional collapse shows as a rank
  far below ``min(N, D)`` even when the std looks fine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

COLLAPSED_STD_FRACTION = 0.1  # of the healthy 1/sqrt(D)
COLLAPSED_RANK = 2.0


@torch.no_grad()
def collapse_metrics(features: torch.Tensor) -> dict[str, float]:
    """``feature_std``, its healthy reference ``1/sqrt(D)`` and ``effective_rank`` of (N, D) embeddings."""
    z = F.normalize(features.detach().float(), dim=-1)
    std = float(z.std(dim=0).mean()) if len(z) > 1 else 0.0
    singular = torch.linalg.svdvals(z - z.mean(dim=0))
    p = singular / singular.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return {"feature_std": std, "feature_std_healthy": 1 / math.sqrt(z.shape[1]), "effective_rank": float(entropy.exp())}


def collapse_warning(metrics: dict[str, float]) -> str | None:
    """A one-line explanation when the metrics say the embeddings have collapsed, else None."""
    if metrics["feature_std"] < COLLAPSED_STD_FRACTION * metrics["feature_std_healthy"]:
        return (f"embeddings are collapsing: feature std {metrics['feature_std']:.4f} is below 10% of the "
                f"healthy {metrics['feature_std_healthy']:.4f}; lower the learning rate or check the augmentations")
    if metrics["effective_rank"] < COLLAPSED_RANK:
        return (f"embeddings are collapsing to a line: effective rank {metrics['effective_rank']:.2f}; "
                "check the augmentations and the method's temperatures")
    return None
