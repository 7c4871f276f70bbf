"""The encoder side of embedding: raw tiles in, feature vectors out (no Ray import).

``Embedder`` is what each Ray Data actor holds: it loads the checkpoint once, then embeds batch
after batch on its GPU (or CPU), passing every other column of the batch through. ``encode`` is
the checkpoint's own recipe (scale, resize, normalise, encode), shared with the benchmarks and
``sslray explain`` so every path feeds an encoder the same way.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from sslray.artifacts.checkpoint import CheckpointMeta, load_encoder
from sslray.artifacts.embeddings import embeddings_batch
from sslray.data.transforms import normalize, resize, to_unit
from sslray.models.backbones import feature_dim


class Embedder:
    """A Ray Data actor: loads the encoder once, then embeds batch after batch.

    ``empty_below``: tiles whose ``tissue_fraction`` is below it are not encoded and get a NaN
    vector instead (fields without cells), so a later NaN-aware mean skips them while the
    table still has one row per tile.
    """

    def __init__(self, checkpoint: str, l2_normalize: bool, empty_below: float | None = None) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder, self.meta = load_encoder(checkpoint)
        self.encoder.to(self.device)
        self.checkpoint = checkpoint
        self.l2_normalize = l2_normalize
        self.empty_below = empty_below
        self.embed_dim = self.meta.embed_dim or feature_dim(self.encoder)  # older checkpoints do not record it

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        images = np.ascontiguousarray(batch.pop("image"))
        keep = self._cells(batch, len(images))
        features = np.full((len(images), self.dim(images.shape[1])), np.nan, np.float32)
        if keep.any():
            picked = images[keep] if not keep.all() else images
            # Ray hands batches over read-only (zero-copy from the object store); torch wants to own writable memory
            x = torch.from_numpy(picked if picked.flags.writeable else picked.copy()).to(self.device)
            features[keep] = self._features(x).cpu().numpy()
        return embeddings_batch(batch, features, self.checkpoint)

    def dim(self, n_channels: int) -> int:
        return self.embed_dim * (n_channels if self.meta.per_channel else 1)

    def _cells(self, batch: dict[str, np.ndarray], n: int) -> np.ndarray:
        if self.empty_below is None or "tissue_fraction" not in batch:
            return np.ones(n, bool)
        return np.asarray(batch["tissue_fraction"], np.float64) >= self.empty_below

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        features = encode(self.encoder, x, self.meta, self.device)
        if self.l2_normalize:  # per channel block for channel-agnostic encoders, so no channel dominates
            features = torch.nn.functional.normalize(features.view(len(x), -1, self.embed_dim), dim=-1)
        return features.reshape(len(x), -1)


def encode(encoder: torch.nn.Module, images: torch.Tensor, meta: CheckpointMeta, device: torch.device) -> torch.Tensor:
    """Raw tiles -> embeddings as the checkpoint prescribes: scale, resize, normalise, encode.

    A channel-agnostic checkpoint (``per_channel``) encodes each channel as its own image and
    concatenates the C vectors in channel order: (B, C * D).
    """
    x = resize(to_unit(images, meta.scale), meta.image_size)
    b, c = x.shape[:2]
    if meta.per_channel:
        x = x.reshape(b * c, 1, *x.shape[2:])
    x = normalize(x, meta.mean, meta.std)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        features = encoder(x).float()
    return features.reshape(b, -1)
