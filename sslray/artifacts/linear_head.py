"""A fitted linear evaluation head as one small file: ``head.safetensors``.

``sslray evaluate --protocol linear`` writes it beside ``results.json``: the 100% probe folded
into one affine map of the embedding (``logits = weight @ embedding + bias``, standardisation
included), with the class names and what the embedding was (L2-normalised or not, per channel)
in the file's metadata. ``sslray explain --head`` reads it to take a class logit's gradient
through the encoder (Grad-CAM), so the picture explains the probe that was scored.

Tensors: ``weight`` (K, D) and ``bias`` (K,), float32. Metadata (strings): ``classes`` (a JSON
list of K names, row order), ``l2_normalized`` and ``per_channel`` (``true``/``false``), and the
lineage keys that were known (``embeddings``, ``checkpoint``). No Ray, no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from sslray import storage

HEAD_FILE = "head.safetensors"
FLAGS = ("l2_normalized", "per_channel")


class HeadError(ValueError):
    """A head file that cannot be used; the message names the file and what is wrong."""


@dataclass
class LinearHead:
    weight: np.ndarray  # (K, D)
    bias: np.ndarray  # (K,)
    classes: list[str]
    l2_normalized: bool = True  # the embedding is L2-normalised (per channel block) before the head
    per_channel: bool = False  # the embedding is C blocks of a channel-agnostic encoder
    lineage: dict[str, str] = field(default_factory=dict)  # embeddings / checkpoint URLs, redacted

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, np.float32)
        self.bias = np.asarray(self.bias, np.float32)
        k = len(self.classes)
        if self.weight.ndim != 2 or self.weight.shape[0] != k or self.bias.shape != (k,):
            raise HeadError(f"a linear head needs weight (K, D) and bias (K,) for its {k} classes, got "
                            f"{self.weight.shape} and {self.bias.shape}")

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def class_index(self, name: str, where: str) -> int:
        """The row of class ``name``; an unknown name is an error listing the head's classes."""
        if name not in self.classes:
            raise HeadError(f"{where}: class {name!r} is not one of the head's classes {self.classes}")
        return self.classes.index(name)


def head_bytes(head: LinearHead) -> bytes:
    from safetensors.numpy import save

    metadata = {"classes": json.dumps(head.classes), **{k: json.dumps(bool(getattr(head, k))) for k in FLAGS},
                **{k: str(v) for k, v in head.lineage.items()}}
    return save({"weight": head.weight, "bias": head.bias}, metadata=metadata)


def save_head(url: str, head: LinearHead) -> str:
    storage.write_bytes(url, head_bytes(head))
    return url


def read_head(url: str) -> LinearHead:
    """The head at ``url``, checked: both tensors, class names that match their rows."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        raise HeadError(f"no head file at {url}; `sslray evaluate --protocol linear` writes {HEAD_FILE} beside "
                        "its results.json") from None
    try:
        tensors, metadata = load(data), _metadata(data)
        classes = json.loads(metadata["classes"])
        flags = {k: json.loads(metadata.get(k, "false")) for k in FLAGS}
        lineage = {k: v for k, v in metadata.items() if k not in ("classes", *FLAGS)}
        return LinearHead(tensors["weight"], tensors["bias"], [str(c) for c in classes], **flags, lineage=lineage)
    except (SafetensorError, KeyError, TypeError, ValueError) as err:  # HeadError and bad JSON are ValueErrors
        raise HeadError(f"{url} is not a linear head file ({type(err).__name__}: {err}); it needs tensors weight "
                        "and bias and a classes list in its metadata") from None


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (8-byte little-endian length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8 : 8 + size]).get("__metadata__") or {})
