"""The checkpoint files (docs/data_contracts.md, "Checkpoint").

A checkpoint directory holds:

- ``encoder.safetensors``: the exported encoder (for DINO, the teacher backbone);
- ``sslray.json`` (``CheckpointMeta``): everything needed to rebuild and feed it with no other
  input (backbone name/kwargs, input channels and size, intensity scale, per-channel mean/std,
  method, resolved config, data lineage; for an imported encoder, its source file);
- ``train_state.pt`` (training checkpoints only): method + optimizer state, the step and
  the data epoch, loaded with ``weights_only=True``.

``sslray.json`` is written last and records every file's SHA-256, so a reader refuses a
checkpoint that a crash cut short instead of loading it wrong.

No Ray import: ``sslray embed`` and notebooks load checkpoints without a cluster.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslray import storage
from sslray.artifacts.checkpoint_meta import FORMAT_VERSION, META_FILE, CheckpointError, CheckpointMeta
from sslray.models.backbones import BackboneConfig, create_backbone
from sslray.models.layouts import set_layer_norm_eps
from sslray.models.weights import WeightsError, load_backbone_weights, load_weights_only

ENCODER_FILE = "encoder.safetensors"
TRAIN_STATE_FILE = "train_state.pt"
__all__ = ["ENCODER_FILE", "FORMAT_VERSION", "META_FILE", "TRAIN_STATE_FILE", "CheckpointError", "CheckpointMeta",
           "encoder_state", "load_encoder", "load_train_state", "read_meta", "save_checkpoint"]


def save_checkpoint(directory: str | Path, encoder: nn.Module, meta: CheckpointMeta | Mapping[str, Any],
                    train_state: dict[str, Any] | None = None) -> None:
    """Weight files first, ``sslray.json`` last with each file's SHA-256.

    A checkpoint copied or uploaded file by file can be cut short anywhere (a killed worker,
    a lost node); the recorded hashes let every reader tell a whole checkpoint from part of
    one, instead of loading a truncated or stale file without noticing. A plain mapping
    ``meta`` is validated as ``CheckpointMeta`` first, so nothing invalid is ever written.
    """
    from safetensors.torch import save as save_safetensors

    if not isinstance(meta, CheckpointMeta):
        meta = CheckpointMeta.from_json(meta, f"metadata for {directory}")
    weights = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    files = {ENCODER_FILE: save_safetensors(weights)}
    if train_state is not None:
        buffer = io.BytesIO()
        torch.save(train_state, buffer)
        files[TRAIN_STATE_FILE] = buffer.getvalue()
    for name, data in files.items():
        storage.write_bytes(storage.join(str(directory), name), data)
    meta.with_files({name: hashlib.sha256(data).hexdigest() for name, data in files.items()}).write(str(directory))


def read_meta(url: str) -> CheckpointMeta:
    """The checkpoint's ``sslray.json``, validated (``CheckpointMeta.read``)."""
    return CheckpointMeta.read(str(url))


def load_train_state(directory: str | Path) -> dict[str, Any]:
    """Method, optimiser and schedule state to resume from (``weights_only=True``)."""
    meta = read_meta(str(directory))
    data = _verified_bytes(str(directory), TRAIN_STATE_FILE, meta)
    state = load_weights_only(storage.join(str(directory), TRAIN_STATE_FILE), data)
    if not isinstance(state, dict):
        raise CheckpointError(f"{storage.join(str(directory), TRAIN_STATE_FILE)}: expected a dict of training state, "
                              f"found {type(state).__name__}; resume from another checkpoint")
    return state


def load_encoder(url: str) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the encoder from the checkpoint alone; returns (model in eval mode, metadata)."""
    meta = read_meta(url)
    model_cfg = BackboneConfig(name=meta.model.name, kwargs=dict(meta.model.kwargs), weights=None)
    encoder = create_backbone(model_cfg, meta.in_chans)
    if meta.layer_norm_eps is not None:  # e.g. a Hugging Face ViT (1e-12) rebuilt as timm's (1e-6)
        set_layer_norm_eps(encoder, meta.layer_norm_eps)
    weights_url = storage.join(url, ENCODER_FILE)
    data = _verified_bytes(url, ENCODER_FILE, meta)
    try:
        load_backbone_weights(encoder, weights_url, data)
    except CheckpointError:
        raise
    except WeightsError as err:  # the hashes match, so sslray.json and the weights were written disagreeing
        raise CheckpointError(f"{err}; {META_FILE} describes {meta.model.name} with "
                              f"{dict(meta.model.kwargs)}: fix the model entry of {META_FILE} to match "
                              "the weights, or re-export the checkpoint") from None
    return encoder.eval(), meta


def encoder_state(url: str) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """The encoder's weights, checked against ``sslray.json``, for an encoder that is not a timm
    backbone (the spot encoder): the caller rebuilds the module from the metadata."""
    from safetensors.torch import load as load_safetensors

    meta = read_meta(url)
    return load_safetensors(_verified_bytes(url, ENCODER_FILE, meta)), meta


def _verified_bytes(url: str, name: str, meta: CheckpointMeta) -> bytes:
    """The file's bytes, checked against the SHA-256 in ``sslray.json`` (format 2 and later)."""
    try:
        data = storage.read_bytes(storage.join(url, name))  # one request: read_bytes checks existence itself
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {url} is incomplete: {name} is missing") from None
    expected = meta.files.get(name)
    if expected is None and meta.format_version >= 2:
        raise CheckpointError(f"checkpoint {url}: {META_FILE} records no SHA-256 for {name}")
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(
            f"checkpoint {url}: {name} does not match the SHA-256 recorded in {META_FILE} "
            "(cut short or damaged); resume or embed from an earlier checkpoint"
        )
    return data
