"""State-dict layouts: published encoders' parameter names -> timm's.

A published encoder arrives in the names of the library that trained it: timm (DINO, iBOT,
UNI, most SSL repos, often under a ``module.``/``teacher.``/``backbone.`` wrapper), Hugging
Face ``ViTModel`` (Phikon, owkin/phikon) or torchvision (ResNet, ``vit_b_16``). sslray rebuilds
every encoder as a timm model, so each layout is a pure renaming into timm's names; whether
the renamed weights then fit the named model is checked by ``sslray.models.weights``, which
names every missing, unexpected or mis-shaped key.

Two things a renaming cannot carry are recorded per layout: a ViT from Hugging Face or
torchvision pools its class token (timm ``global_pool='token'``, ``LAYOUT_KWARGS``), and Hugging
Face's layer norms use ``eps=1e-12`` where timm's use ``1e-6`` (``LAYER_NORM_EPS``), which
``set_layer_norm_eps`` applies after the model is built.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "timm", "hf_vit", "torchvision")
WRAPPERS = ("module.", "teacher.", "model.", "backbone.", "vit.", "encoder.")
"""Prefixes that DDP (``module.``), SSL repos (``teacher.``, ``backbone.``, ``encoder.``), Lightning
(``model.``) and Hugging Face task models (``vit.``) put in front of an encoder's names."""
HEADS = ("head.", "heads.", "fc.", "classifier.", "pooler.", "projector.", "predictor.")
"""Modules beside the encoder in a published file: classifier and SSL heads, Hugging Face's pooler."""
LAYOUT_KWARGS = {"hf_vit": {"global_pool": "token"}, "torchvision_vit": {"global_pool": "token"}}
LAYER_NORM_EPS = {"hf_vit": 1e-12}  # transformers' ViTConfig.layer_norm_eps; timm and torchvision use 1e-6


class LayoutError(ValueError):
    """A state dict is not in the layout asked for, or in none sslray can map; the message says which."""


def to_timm(state: dict[str, torch.Tensor], layout: str = "auto", where: str = "weights"
            ) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in timm's names, and the layout it was read as (``timm``, ``hf_vit``,
    ``torchvision`` for ResNets, whose names are timm's, or ``torchvision_vit``)."""
    if layout not in LAYOUTS:
        raise LayoutError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    state = strip_wrappers(state)
    found = detect_layout(state)
    if layout == "torchvision":
        layout = _torchvision_kind(state, where)
    elif layout not in ("auto", found):
        raise LayoutError(f"{where}: --layout {layout} was asked for but the keys are in the {found} layout "
                          f"(e.g. {_examples(state)}); pass --layout {found.removesuffix('_vit')} or auto")
    else:
        layout = found
    if layout == "hf_vit":
        return hf_vit_to_timm(state, where), layout
    if layout == "torchvision_vit":
        return torchvision_vit_to_timm(state), layout
    return state, layout


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes while every key outside the prefix is a head.

    A DINO file holds ``teacher.`` and ``student.`` copies: the teacher, the one DINO embeds with,
    is kept. Heads outside the prefix stay, so the loader can name what it ignores.
    """
    stripped = True
    while stripped:
        stripped = False
        if any(k.startswith("teacher.") for k in state) and any(k.startswith("student.") for k in state):
            state = {k: v for k, v in state.items() if not k.startswith("student.")}
        for prefix in WRAPPERS:
            inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if inside and all(k.startswith(prefix) or k.startswith(HEADS) for k in state):
                state = inside | {k: v for k, v in state.items() if not k.startswith(prefix)}
                stripped = True
    return state


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """``hf_vit``, ``torchvision_vit`` or ``timm`` (timm's names, torchvision ResNets included)."""
    if any(k.startswith("embeddings.patch_embeddings.") for k in state):
        return "hf_vit"
    if "conv_proj.weight" in state and any(k.startswith("encoder.layers.") for k in state):
        return "torchvision_vit"
    return "timm"


def _torchvision_kind(state: dict[str, torch.Tensor], where: str) -> str:
    """A torchvision ResNet (its names are timm's) or ViT; any other torchvision model is refused."""
    if detect_layout(state) == "torchvision_vit":
        return "torchvision_vit"
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in state):
        return "torchvision"
    raise LayoutError(f"{where}: --layout torchvision maps ResNets (conv1, layer1..4, fc) and ViTs (conv_proj, "
                      f"encoder.layers); these keys are another architecture (e.g. {_examples(state)}). Use the "
                      "timm weights of that model, or rename its keys to timm's and pass --layout timm")


def _examples(state: dict[str, torch.Tensor], n: int = 3) -> str:
    return ", ".join(sorted(state)[:n])


_HF_DROPPED = ("pooler.", "embeddings.mask_token")  # not used to embed an unmasked image
_HF_BLOCK = r"(?:encoder\.layer|layers)\.(\d+)\."  # transformers 4 (published files) | 5 (saved by 5.x)
_HF_RENAMES = (
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (_HF_BLOCK + r"layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (_HF_BLOCK + r"layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_HF_BLOCK + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_HF_BLOCK + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_HF_BLOCK + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
)
_HF_QKV = re.compile(_HF_BLOCK + r"attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)")
_QKV_NAMES = {"q": "query", "k": "key", "v": "value"}


def hf_vit_to_timm(state: dict[str, torch.Tensor], where: str = "weights") -> dict[str, torch.Tensor]:
    """Hugging Face ``ViTModel`` names (transformers 4's, as Phikon is published, or 5's) -> timm's.

    Query, key and value are concatenated (in that order) into timm's fused ``qkv``; the pooler
    is dropped (Phikon's feature is ``last_hidden_state[:, 0]``, timm's class token after
    ``norm``). A key no rule renames is kept as it is, so the fit check reports it as unexpected.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(_HF_DROPPED):
            continue
        if found := _HF_QKV.fullmatch(key):
            block, name, short, part = found.groups()
            qkv.setdefault((block, part), {})[name or _QKV_NAMES[short]] = value
            continue
        out[_hf_rename(key)] = value
    for (block, part), parts in sorted(qkv.items()):
        if len(parts) != 3:
            raise LayoutError(f"{where}: the attention of layer {block} has {', '.join(sorted(parts))} {part} but "
                              "not all of query, key and value; the file is incomplete")
        out[f"blocks.{block}.attn.qkv.{part}"] = torch.cat([parts[n] for n in ("query", "key", "value")])
    return out


def _hf_rename(key: str) -> str:
    for pattern, replacement in _HF_RENAMES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return key


_TV_RENAMES = (
    (r"class_token", "cls_token"),
    (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.pos_embedding", "pos_embed"),
    (r"encoder\.ln\.(weight|bias)", r"norm.\1"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.ln_1\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.ln_2\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.(?:0|linear_1)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.(?:3|linear_2)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
)


def torchvision_vit_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``VisionTransformer`` (``vit_b_16``...) names -> timm's.

    ``nn.MultiheadAttention`` keeps query, key and value stacked in ``in_proj`` in timm's order,
    so only names change; the classifier (``heads.*``) is dropped like every head.
    """
    out = {}
    for key, value in state.items():
        if key.startswith("heads."):
            continue
        name = next((re.sub(p, r, key) for p, r in _TV_RENAMES if re.fullmatch(p, key)), key)
        out[name] = value
    return out


def set_layer_norm_eps(model: nn.Module, eps: float) -> int:
    """Give every LayerNorm of ``model`` the ``eps`` its weights were trained with; returns how many."""
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    for norm in norms:
        norm.eps = eps
    log.debug("set eps=%g on %d LayerNorm modules", eps, len(norms))
    return len(norms)
