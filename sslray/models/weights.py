"""Loading backbone weights from a local path or URL, safely.

Weights arrive as safetensors or as a pickled ``state_dict``; pickles are loaded with
``weights_only=True`` so a checkpoint cannot run code. Mismatches are reported by key and
shape instead of PyTorch's wall of text, because the usual cause (wrong ``in_chans`` or
patch size) is obvious once named.
"""

from __future__ import annotations

import io

import torch
from torch import nn

from sslray.storage import read_bytes


class WeightsError(ValueError):
    """A weight file does not fit the model; the message names the file and the keys."""


def read_state_dict(url: str) -> dict[str, torch.Tensor]:
    data = read_bytes(url)
    if url.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        return load_safetensors(data)
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


def load_backbone_weights(model: nn.Module, url: str) -> None:
    state = _strip_prefixes(read_state_dict(url), model.state_dict().keys())
    expected = model.state_dict()
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
