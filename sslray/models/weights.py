"""Loading backbone weights from a local path or URL, safely.

Weights arrive as safetensors or as a pickled ``state_dict``; pickles are loaded with
``weights_only=True`` so a checkpoint cannot run code. Mismatches are reported by key and
shape instead of PyTorch's wall of text, because the usual cause (wrong ``in_chans``, patch
size or depth) is obvious once named; a file that fits only partly is refused, not half-loaded.
"""

from __future__ import annotations

import io
import logging
import pickle
import re

import torch
from torch import nn

from sslray.models.layouts import HEADS, to_timm
from sslray.storage import read_bytes

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """A weight file does not fit the model; the message names the file and the keys."""


def read_state_dict(url: str, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """The state dict in the file at ``url``; ``data``, when given, is that file's content
    already read (a checkpoint reads its files once, to verify and load them)."""
    data = read_bytes(url) if data is None else data
    if url.endswith(".safetensors") or _looks_safetensors(data):
        return _read_safetensors(url, data)
    state = load_weights_only(url, data)
    for key in ("teacher", "state_dict", "model"):  # DINO/iBOT and Lightning-style wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise WeightsError(f"{url}: expected a state dict, found {type(state).__name__}")
    other = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if other:
        raise WeightsError(f"{url}: expected a state dict of tensors, but {', '.join(other[:5])} "
                           f"{'holds' if len(other) == 1 else 'hold'} something else; save the encoder's "
                           "state_dict() alone")
    return state


def _looks_safetensors(data: bytes) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian) and then the
    JSON header, so one named ``model.bin`` or fetched from a URL with a query is still read as one."""
    size = int.from_bytes(data[:8], "little") if len(data) > 8 else 0
    return 0 < size <= len(data) - 8 and data[8:9] == b"{"


def _read_safetensors(url: str, data: bytes) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file is parsed only as safetensors: a pickle renamed to it is refused,
    never handed to ``torch.load``."""
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(data)
    except Exception as err:  # safetensors raises its own error type for truncated or foreign files
        if _looks_pickled(data):
            raise WeightsError(
                f"{url}: refused for safety: this .safetensors file is really a pickle (torch.save), which "
                "could run code when loaded; re-save it as safetensors "
                "(safetensors.torch.save_file(model.state_dict(), path))") from None
        raise WeightsError(f"{url}: not a readable safetensors file: {err}") from None


def _looks_pickled(data: bytes) -> bool:
    """A torch.save zip archive, or a raw pickle (protocol 2 and later start with 0x80)."""
    return data[:2] == b"PK" or data[:1] == b"\x80"


def load_weights_only(url: str, data: bytes):
    """``torch.load(weights_only=True)`` with errors that name the file and never advise
    ``weights_only=False``: a pickle holding anything but tensors and plain containers could
    run code, so it is refused, and the fix is to re-save it, not to trust it."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if not (found or _looks_pickled(data)):  # random bytes also fail as a pickle
            raise WeightsError(f"{url}: not a readable torch file (not written by torch.save)") from None
        what = f" (it holds {found.group(1)})" if found else ""
        raise WeightsError(
            f"{url}: refused for safety: not a weights-only pickle: it holds objects other than tensors and "
            f"plain containers{what}, and loading it could run code; re-save it as a plain state_dict "
            "(torch.save(model.state_dict(), path)) or as safetensors") from None
    except Exception as err:  # torch raises RuntimeError, KeyError, EOFError... for corrupt files
        raise WeightsError(f"{url}: not a readable torch file (truncated, or not written by torch.save): "
                           f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None


def load_backbone_weights(model: nn.Module, url: str, data: bytes | None = None, layout: str = "auto") -> str:
    """Load a timm, torchvision (ResNet, ViT), DINO/iBOT-teacher or Hugging Face ViT (Phikon) state
    dict; returns the layout it was read as (``sslray.models.layouts``).

    Wrapper prefixes are stripped and the layout's names mapped to timm's, then the weights
    must fit (``load_state``).
    """
    state, found = to_timm(read_state_dict(url, data), layout, url)
    load_state(model, state, url)
    return found


def load_state(model: nn.Module, state: dict[str, torch.Tensor], url: str) -> None:
    """Load a state dict in timm's names, all of it or nothing.

    RGB weights are adapted to the model's channel count by the rule of ``adapt_first_conv``.
    Keys the backbone lacks are an error like missing ones (a 4-block file read into a 2-block
    model must not embed silently), except the heads listed in ``IGNORED_PREFIXES``; nothing is
    loaded unless every key fits, so a failed load leaves the model as it was.
    """
    expected = model.state_dict()
    state = adapt_first_conv(state, expected, url)
    wrong_shape = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    missing = sorted(set(expected) - set(state))
    unexpected = _unexpected_keys(state, expected, url)
    if wrong_shape or missing or unexpected:
        raise WeightsError(f"{url}: weights do not fit the backbone ({_mismatch(wrong_shape, missing, unexpected)})")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)


IGNORED_PREFIXES = HEADS
"""Keys a published checkpoint legitimately carries beyond a headless backbone: classifier or SSL
heads (timm/DINO/iBOT ``head.*``, torchvision ``fc.*``/``heads.*``, Hugging Face ``classifier.*``
and ``pooler.*``, SimCLR/BYOL ``projector.*``/``predictor.*``). Any other key the backbone lacks
means the file describes another architecture (e.g. more blocks) and is an error."""


def _unexpected_keys(state: dict[str, torch.Tensor], expected, url: str) -> list[str]:
    """Keys of the file that the backbone lacks, less the documented ignorable heads (logged)."""
    extra = sorted(set(state) - set(expected))
    ignored = [k for k in extra if k.startswith(IGNORED_PREFIXES)]
    if ignored:
        log.info("%s: ignoring %d head key(s) that are not part of the backbone (%s)", url, len(ignored),
                 ", ".join(ignored[:5]))
    return [k for k in extra if not k.startswith(IGNORED_PREFIXES)]


def _mismatch(wrong_shape: list[str], missing: list[str], unexpected: list[str]) -> str:
    """Up to five of each kind of mismatch, with the counts, so a 12-block file read into a
    2-block model is one readable line."""
    parts = wrong_shape[:5] + [f"missing {k}" for k in missing[:5]]
    if len(wrong_shape) > 5:
        parts.append(f"{len(wrong_shape)} mis-shaped in all")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) the backbone does not have: {', '.join(unexpected[:5])}"
                     + (", ..." if len(unexpected) > 5 else ""))
    if len(missing) > 5:
        parts.append(f"{len(missing)} missing in all")
    return "; ".join(parts)


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
