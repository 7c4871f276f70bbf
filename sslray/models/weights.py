"""Loading backbone weights from a local path or URL, safely.

Weights arrive as safetensors or as a pickled ``state_dict``; pickles are loaded with
``weights_only=True`` so a checkpoint cannot run code. Mismatches are reported by key and
shape instead of PyTorch's wall of text, because the usual cause (wrong ``in_chans`` or
patch size) is obvious once named.
"""

from __future__ import annotations

import io
import logging

import torch
from torch import nn

from sslray.storage import read_bytes

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """A weight file does not fit the model; the message names the file and the keys."""


def read_state_dict(url: str, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """The state dict in the file at ``url``; ``data``, when given, is that file's content
    already read (a checkpoint reads its files once, to verify and load them)."""
    data = read_bytes(url) if data is None else data
    if url.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data)
        except Exception as err:  # safetensors raises its own error type for truncated or foreign files
            raise WeightsError(f"{url}: not a readable safetensors file: {err}") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe pickles
        raise WeightsError(f"{url}: cannot load as a weights-only torch state dict: {err}") from None
    for key in ("teacher", "state_dict", "model"):  # DINO/iBOT and Lightning-style wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise WeightsError(f"{url}: expected a state dict, found {type(state).__name__}")
    return state


def load_backbone_weights(model: nn.Module, url: str, data: bytes | None = None) -> None:
    """Load a timm, torchvision-ResNet, DINO/iBOT-teacher or Hugging Face ViT (Phikon) state dict.

    Wrapper prefixes are stripped, Hugging Face ViT names are mapped to timm's, and RGB
    weights are adapted to the model's channel count by the rule of ``adapt_first_conv``.
    """
    expected = model.state_dict()
    state = read_state_dict(url, data)
    if any(k.startswith(("embeddings.patch_embeddings", "vit.embeddings")) for k in state):
        state = hf_vit_to_timm(state)
    state = _strip_prefixes(state, expected.keys())
    state = adapt_first_conv(state, expected, url)
    wrong_shape = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    missing = sorted(set(expected) - set(state))
    if wrong_shape or missing:
        detail = "; ".join(wrong_shape[:5] + [f"missing {k}" for k in missing[:5]])
        raise WeightsError(f"{url}: weights do not fit the backbone ({detail})")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)


def _strip_prefixes(state: dict[str, torch.Tensor], wanted) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (``module.``, ``backbone.``) that DDP and SSL repos add."""
    wanted = set(wanted)
    for prefix in ("module.", "backbone.", "encoder."):
        if not any(k in wanted for k in state) and any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    return state


FIRST_CONVS = ("patch_embed.proj.weight", "conv1.weight", "stem.conv.weight", "stem.conv1.weight")


def adapt_first_conv(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], url: str
                     ) -> dict[str, torch.Tensor]:
    """RGB weights for a C-channel model, by timm's rule (``adapt_input_conv``).

    C = 1: the three RGB filters are summed (a grey image gives the same response as the
    RGB image with that grey in every channel). C > 3: the RGB filters are repeated
    cyclically (R, G, B, R, ...) and scaled by 3 / C, so the first layer's output keeps its
    scale. The channels' meaning is not transferred: fine-tune or pretrain afterwards.
    """
    from timm.models._manipulate import adapt_input_conv

    for key in FIRST_CONVS:
        if key in state and key in expected and state[key].shape != expected[key].shape:
            theirs, ours = state[key].shape, expected[key].shape
            if theirs[1] == 3 and theirs[0] == ours[0] and theirs[2:] == ours[2:]:
                log.warning("%s: adapting %s from 3 to %d input channels (sum for 1, repeat and scale by 3/C "
                            "otherwise)", url, key, ours[1])
                state = {**state, key: adapt_input_conv(ours[1], state[key]).to(state[key].dtype)}
    return state


def hf_vit_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``ViTModel`` names (e.g. Phikon, owkin/phikon) -> timm ``VisionTransformer`` names.

    Query, key and value projections are concatenated into timm's fused ``qkv``; the pooler
    (not part of the backbone) is dropped.
    """
    state = {k.removeprefix("vit."): v for k, v in state.items() if not k.startswith(("pooler.", "vit.pooler."))}
    out = {
        "cls_token": state.pop("embeddings.cls_token"),
        "pos_embed": state.pop("embeddings.position_embeddings"),
        "patch_embed.proj.weight": state.pop("embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": state.pop("embeddings.patch_embeddings.projection.bias"),
    }
    for part in ("weight", "bias"):
        if f"layernorm.{part}" in state:
            out[f"norm.{part}"] = state.pop(f"layernorm.{part}")
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    for i in blocks:
        hf, timm_ = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            qkv = [state.pop(f"{hf}attention.attention.{n}.{part}") for n in ("query", "key", "value")]
            out[f"{timm_}attn.qkv.{part}"] = torch.cat(qkv)
            for ours, theirs in _HF_BLOCK_NAMES.items():
                out[f"{timm_}{ours}.{part}"] = state.pop(f"{hf}{theirs}.{part}")
    if state:
        raise WeightsError(f"Hugging Face ViT weights have keys sslray cannot map: {sorted(state)[:5]}")
    return out


_HF_BLOCK_NAMES = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
