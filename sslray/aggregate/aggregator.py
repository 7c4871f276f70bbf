"""The trained aggregator: its checkpoint under a spot table's ``_aggregator/``, loading it back
(also from spot tables written before it was a standard checkpoint), and embedding spots with it.

Since ``spot_dino`` trains on Ray Train, ``_aggregator/`` is a standard sslray checkpoint
(``encoder.safetensors`` + ``sslray.json`` with the SHA-256 of the weights, docs/data_contracts.md,
"Checkpoint"): ``model`` is ``spot_encoder`` with the ``SpotModelConfig`` as kwargs, ``in_chans``
the tile-embedding width, and ``spot_column`` / ``grid_step`` say how the grids were built. Older
spot tables hold ``aggregator.safetensors`` + ``aggregator.json`` (format 1), still read here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sslray import storage
from sslray.artifacts.checkpoint import META_FILE, CheckpointMeta, encoder_state, save_checkpoint
from sslray.artifacts.spot_table import AGGREGATOR_DIR
from sslray.methods.spot_views import SpotGrid, pad_rows
from sslray.models.spot_encoder import SpotEncoder, SpotModelConfig

LEGACY_WEIGHTS = "aggregator.safetensors"
LEGACY_META = "aggregator.json"


def save_aggregator(directory: str, encoder: SpotEncoder, meta: CheckpointMeta) -> None:
    """The encoder as a standard checkpoint (no training state): weights first, ``sslray.json`` last."""
    save_checkpoint(directory, encoder, meta)


def load_aggregator(url: str) -> tuple[SpotEncoder, dict[str, Any]]:
    """A spot table URL (or its ``_aggregator`` directory) -> the trained encoder (eval mode) and its
    metadata (``sslray.json``'s keys, plus ``in_dim``, the tile-embedding width)."""
    directory = url if _holds_aggregator(url) else storage.join(url, AGGREGATOR_DIR)
    if storage.exists(storage.join(directory, LEGACY_META)):
        return _load_legacy(directory)
    state, meta = encoder_state(directory)
    encoder = SpotEncoder(meta.in_chans, SpotModelConfig(**meta.model.kwargs))
    encoder.load_state_dict(state)
    return encoder.eval(), {**meta.to_json(), "in_dim": meta.in_chans}


def _holds_aggregator(url: str) -> bool:
    return any(storage.exists(storage.join(url, name)) for name in (META_FILE, LEGACY_META))


def _load_legacy(directory: str) -> tuple[SpotEncoder, dict[str, Any]]:
    """Format 1 (before spot_dino ran on Ray Train): ``aggregator.json`` + ``aggregator.safetensors``."""
    from safetensors.torch import load as load_safetensors

    meta = storage.read_json(storage.join(directory, LEGACY_META))
    encoder = SpotEncoder(meta["in_dim"], SpotModelConfig(**meta["model"]))
    encoder.load_state_dict(load_safetensors(storage.read_bytes(storage.join(directory, LEGACY_WEIGHTS))))
    return encoder.eval(), meta


@torch.no_grad()
def embed_spots(encoder: SpotEncoder, embeddings: torch.Tensor, grids: list[SpotGrid], batch_size: int = 64,
                device: torch.device | str = "cpu") -> np.ndarray:
    """L2-normalised CLS embedding of every spot's full grid: (n_spots, dim) float32, in ``grids`` order.

    Spots are batched by size so little compute goes to padding.
    """
    encoder = encoder.to(device).eval()
    embeddings = embeddings.to(device=device, dtype=torch.float32)
    out = np.empty((len(grids), encoder.embed_dim), dtype=np.float32)
    order = np.argsort([g.n_tiles for g in grids], kind="stable")
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        rows, mask = pad_rows([grids[i].rows for i in chunk])
        rows_t, mask_t = torch.from_numpy(rows).to(embeddings.device), torch.from_numpy(mask).to(embeddings.device)
        out[chunk] = F.normalize(encoder(embeddings[rows_t], mask_t).float(), dim=-1).cpu().numpy()
    return out


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is a device; a CUDA device asked for but missing is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but no CUDA device is available")
    return torch.device(name)
