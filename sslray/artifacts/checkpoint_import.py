"""``sslray checkpoint import``: a published encoder's weights -> an sslray checkpoint.

A foundation model published by someone else (Phikon, a timm model, a torchvision ResNet) is
embedded, evaluated and profiled exactly like an encoder sslray trained once it is a
checkpoint of the same contract (docs/data_contracts.md, "Checkpoint"): the weights are renamed
into timm's names (``sslray.models.layouts``), loaded into the named timm model all or nothing
(``sslray.models.weights.load_state``), and written by ``save_checkpoint`` with an
``sslray.json`` saying how to feed it (ImageNet mean/std and 8-bit tiles unless told otherwise).
``method`` is ``imported`` and ``source`` records the weights' URL (redacted) and SHA-256, so a
result can be traced to the exact file.

The checkpoint is published atomically (``sslray.stage.publishing``): a failure leaves nothing
at OUT, and OUT is never a folder sslray did not write, nor a checkpoint sslray trained.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sslray import storage
from sslray.artifacts.checkpoint import META_FILE, read_meta, save_checkpoint
from sslray.artifacts.checkpoint_meta import CheckpointMeta, ModelSpec, pooled_stats
from sslray.credentials import redact
from sslray.models.backbones import BackboneConfig, create_backbone, feature_dim
from sslray.models.layouts import LAYER_NORM_EPS, LAYOUT_KWARGS, LAYOUTS, set_layer_norm_eps, to_timm
from sslray.models.weights import load_state, read_state_dict
from sslray.stage import publishing

log = logging.getLogger(__name__)

WHAT = "checkpoint"
METHOD = "imported"
IMAGENET_MEAN = [0.485, 0.456, 0.406]  # torchvision's and timm's IMAGENET_DEFAULT_MEAN / _STD
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class ImportSpec:
    """What to import and how the checkpoint feeds it; ``None`` fields take the defaults below."""

    model: str = ""  # a timm model name (``vit_base_patch16_224`` for Phikon)
    weights: str = ""  # local path or URL (s3://, https://) of safetensors or a weights-only pickle
    out: str = ""  # the checkpoint directory to publish
    layout: str = "auto"  # auto | timm | hf_vit | torchvision (sslray.models.layouts)
    kwargs: dict[str, Any] = field(default_factory=dict)  # more timm.create_model arguments
    in_chans: int | None = None  # default 3, or 1 with per_channel
    mean: list[float] | None = None  # default ImageNet's (pooled over RGB for one channel)
    std: list[float] | None = None
    image_size: int | None = None  # default: the model's own (img_size, else timm's default_cfg)
    mpp: float | None = None  # microns per pixel the encoder expects, when known
    scale: float = 255.0  # the tiles' full-scale value (255 for uint8)
    per_channel: bool = False  # channel-agnostic: each channel embedded as its own 1-channel image
    overwrite: bool = False

    def __post_init__(self) -> None:
        missing = [key for key in ("model", "weights", "out") if not getattr(self, key)]
        if missing:
            raise ValueError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.per_channel and self.in_chans not in (None, 1):
            raise ValueError(f"per_channel encoders see one channel at a time: in_chans must be 1, got "
                             f"{self.in_chans}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together: give both or neither (ImageNet's)")
        reserved = sorted({"in_chans", "num_classes", "pretrained"} & set(self.kwargs))
        if reserved:
            raise ValueError(f"model kwargs {', '.join(reserved)} are set by sslray (use --in-chans; the encoder is "
                             "headless and its weights come from --weights)")
        BackboneConfig(self.model)  # names the model when timm does not know it
        _stats(self)  # before any download

    @property
    def channels(self) -> int:
        return self.in_chans or (1 if self.per_channel else 3)


def import_checkpoint(spec: ImportSpec) -> CheckpointMeta:
    """Publish ``spec.weights`` as an sslray checkpoint at ``spec.out``; returns its metadata.

    The destination is checked before the weights are read (a wrong OUT fails in a second, not
    after a 350 MB download), and again when publishing.
    """
    _refuse_trained_checkpoint(spec.out)
    storage.check_destination(spec.out, "checkpoint", WHAT, spec.overwrite)
    data = storage.read_bytes(spec.weights)
    state, layout = to_timm(read_state_dict(spec.weights, data), spec.layout, spec.weights)
    model = ModelSpec(spec.model, {**LAYOUT_KWARGS.get(layout, {}), **spec.kwargs})
    encoder = create_backbone(BackboneConfig(model.name, dict(model.kwargs)), spec.channels)
    eps = LAYER_NORM_EPS.get(layout)
    if eps is not None:
        set_layer_norm_eps(encoder, eps)
    load_state(encoder, state, spec.weights)
    source = {"weights": redact(spec.weights), "sha256": hashlib.sha256(data).hexdigest(), "layout": layout,
              "bytes": len(data)}
    meta = _meta(spec, model, encoder, eps, source)
    _check_embeds(encoder.eval(), meta)
    with publishing(spec.out, kind="checkpoint", what=WHAT, overwrite=spec.overwrite) as output:
        save_checkpoint(output.staging, encoder, meta)
        output.info.update({"method": METHOD, "model": model.name, **source})
    log.info("imported %s (%s layout, %d-d) as %s", redact(spec.weights), layout, meta.embed_dim, spec.out)
    return read_meta(spec.out)  # as written: with the files' SHA-256


def _meta(spec: ImportSpec, model: ModelSpec, encoder: nn.Module, eps: float | None,
          source: dict[str, Any]) -> CheckpointMeta:
    """``sslray.json`` of the imported encoder: how to feed it, and where its weights came from."""
    from sslray.config import to_dict

    mean, std = _stats(spec)
    return CheckpointMeta(model=model, in_chans=spec.channels, image_size=spec.image_size or _native_size(encoder),
                          scale=spec.scale, mean=mean, std=std, method=METHOD, per_channel=spec.per_channel,
                          embed_dim=feature_dim(encoder), config=redact(to_dict(spec)), mpp=spec.mpp,
                          layer_norm_eps=eps, source=source)


def _stats(spec: ImportSpec) -> tuple[list[float], list[float]]:
    """The given mean/std, else ImageNet's: per RGB channel, or pooled for a one-channel encoder."""
    if spec.mean is not None and spec.std is not None:
        mean, std = [float(v) for v in spec.mean], [float(v) for v in spec.std]
    elif spec.channels == 3:
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    elif spec.channels == 1:
        mean, std = pooled_stats(IMAGENET_MEAN, IMAGENET_STD)
    else:
        raise ValueError(f"a {spec.channels}-channel encoder has no ImageNet mean/std: give --mean and --std with "
                         f"{spec.channels} values each")
    if len(mean) != spec.channels or len(std) != spec.channels:
        raise ValueError(f"mean and std need {spec.channels} value(s) each (one per input channel), got {len(mean)} "
                         f"and {len(std)}")
    return mean, std


def _native_size(encoder: nn.Module) -> int:
    """The input size the weights were made for: a ViT's ``img_size``, else timm's default_cfg."""
    patch_embed = getattr(encoder, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None) or encoder.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
    return int(size[-1] if isinstance(size, tuple | list) else size)


@torch.no_grad()
def _check_embeds(encoder: nn.Module, meta: CheckpointMeta) -> None:
    """One blank tile through the encoder: a size the model cannot take fails here, not in embed."""
    x = torch.zeros(1, meta.in_chans, meta.image_size, meta.image_size)
    try:
        features = encoder(x)
    except RuntimeError as err:
        raise ValueError(f"{meta.model.name} cannot embed a {meta.image_size}-px image ({str(err).splitlines()[0]}); "
                         "choose another --image-size") from None
    if tuple(features.shape) != (1, meta.embed_dim):
        raise ValueError(f"{meta.model.name} gives features of shape {tuple(features.shape)}, not one "
                         f"{meta.embed_dim}-d vector per image; pass a pooling model kwarg such as global_pool")


def _refuse_trained_checkpoint(url: str) -> None:
    """A checkpoint sslray trained carries no ``_SUCCESS``: name it instead of calling it a foreign folder."""
    if storage.exists(storage.join(url, META_FILE)) and storage.artifact_kind(url) is None:
        raise storage.OutputError(f"{url} is a checkpoint sslray wrote while training (or an older one); an import "
                                  "never replaces it, even with --overwrite. Choose another --out")
