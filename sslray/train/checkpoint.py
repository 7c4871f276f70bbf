"""The checkpoint contract (design.md §3).

A checkpoint directory holds:

- ``encoder.safetensors``: the exported encoder (for DINO, the teacher backbone);
- ``sslray.json``: everything needed to rebuild and feed it with no other input
  (backbone name/kwargs, input channels and size, intensity scale, per-channel mean/std,
  method, resolved config, data lineage);
- ``train_state.pt`` (training checkpoints only): method + optimizer state and the step,
  loaded with ``weights_only=True``.

No Ray import: ``sslray embed`` and notebooks load checkpoints without a cluster.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslray import storage
from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.models.weights import WeightsError, load_backbone_weights

ENCODER_FILE = "encoder.safetensors"
META_FILE = "sslray.json"
TRAIN_STATE_FILE = "train_state.pt"
FORMAT_VERSION = 1


def save_encoder(directory: str | Path, encoder: nn.Module, meta: dict[str, Any]) -> None:
    from safetensors.torch import save as save_safetensors

    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    storage.write_bytes(storage.join(str(directory), ENCODER_FILE), save_safetensors(state))
    storage.write_json(storage.join(str(directory), META_FILE), {"format_version": FORMAT_VERSION, **meta})


def save_train_state(directory: str | Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    storage.write_bytes(storage.join(str(directory), TRAIN_STATE_FILE), buffer.getvalue())


def load_train_state(directory: str | Path) -> dict[str, Any]:
    data = storage.read_bytes(storage.join(str(directory), TRAIN_STATE_FILE))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def read_meta(url: str) -> dict[str, Any]:
    meta_url = storage.join(url, META_FILE)
    if not storage.exists(meta_url):
        raise FileNotFoundError(f"{url} is not an sslray checkpoint: {META_FILE} is missing")
    meta = storage.read_json(meta_url)
    for key in ("model", "in_chans", "image_size", "scale", "mean", "std"):
        if key not in meta:
            raise WeightsError(f"{meta_url}: checkpoint metadata lacks {key!r}")
    return meta


def load_encoder(url: str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the encoder from the checkpoint alone; returns (model in eval mode, metadata)."""
    meta = read_meta(url)
    model_cfg = BackboneConfig(name=meta["model"]["name"], kwargs=meta["model"].get("kwargs", {}), weights=None)
    encoder = create_backbone(model_cfg, meta["in_chans"])
    load_backbone_weights(encoder, storage.join(url, ENCODER_FILE))
    return encoder.eval(), meta
