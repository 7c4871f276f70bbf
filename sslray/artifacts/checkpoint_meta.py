"""``CheckpointMeta``: the ``sslray.json`` of a checkpoint, everything needed to rebuild and feed
its encoder with no other input.

It records the backbone (timm name and kwargs), the input (channels, size, intensity scale,
mean/std, per-channel flag), the method, the lineage (store, manifest SHA-256, selection, MLflow
run) and each file's SHA-256. The JSON keys are those sslray has always written; every earlier
``format_version`` still reads (1: no ``files``; 2: ``files``). Optional keys added since
(``mpp``, ``layer_norm_eps``, ``source`` of an imported encoder) are written only when set and
read as absent from older files, so they need no new format version. Format rules:
docs/data_contracts.md, "Checkpoint".

``DataFacts`` is the half that comes from the tile store: a pretraining plan computes it once on
the driver, and the quickstart's random-init baseline computes it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sslray import storage
from sslray.artifacts.tile_store import TileStore, manifest_sha256
from sslray.credentials import redact
from sslray.models.weights import WeightsError

META_FILE = "sslray.json"
FORMAT_VERSION = 2  # 2: sslray.json records every file's SHA-256
REQUIRED = ("model", "in_chans", "image_size", "scale", "mean", "std")
OPTIONAL = ("step", "mpp", "layer_norm_eps", "source")  # written only when set; absent in older files


class CheckpointError(WeightsError):
    """A checkpoint is incomplete or damaged; the message names the directory and the file."""


@dataclass(frozen=True)
class ModelSpec:
    """The timm backbone to rebuild (``model`` in ``sslray.json``); weights come from the checkpoint."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"model.name must be a timm model name, got {self.name!r}")
        if not isinstance(self.kwargs, Mapping):
            raise ValueError(f"model.kwargs must be a mapping, got {type(self.kwargs).__name__}")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs), "weights": None}


@dataclass(frozen=True)
class Lineage:
    """Where the training data came from, so a score can be traced back to its tiles."""

    store: str = ""
    manifest_sha256: str = ""
    selection: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None  # the pretraining run (absent in checkpoints written before it was recorded)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lineage:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class DataFacts:
    """What a checkpoint must remember of the data: channels, intensity scaling, lineage.

    A channel-agnostic encoder sees one channel at a time, so it gets one mean/std pooled over
    all channels and ``in_chans`` 1, and embeds a C-channel image channel by channel.
    """

    scale: float
    mean: list[float]
    std: list[float]
    channels: list[str]
    in_chans: int
    per_channel: bool
    lineage: Lineage

    @classmethod
    def of(cls, store: TileStore, channel_agnostic: bool = False) -> DataFacts:
        from sslray.config import to_dict

        info = store.info
        mean, std = pooled_stats(info.mean, info.std) if channel_agnostic else (list(info.mean), list(info.std))
        lineage = Lineage(store=redact(store.url), manifest_sha256=manifest_sha256(store.url),
                          selection=to_dict(store.selection))
        return cls(info.scale, mean, std, list(info.channels), 1 if channel_agnostic else info.n_channels,
                   channel_agnostic, lineage)

    @property
    def stats(self) -> dict[str, Any]:
        """The intensity normalisation the training step applies (``SSLStep``'s ``stats``)."""
        return {"scale": self.scale, "mean": self.mean, "std": self.std, "channels": self.channels}


def pooled_stats(means: list[float], stds: list[float]) -> tuple[list[float], list[float]]:
    """Mean and std of all channels' pixels taken together (equal pixel counts per channel)."""
    mean = sum(means) / len(means)
    variance = sum(s**2 + (m - mean) ** 2 for m, s in zip(means, stds, strict=True)) / len(means)
    return [mean], [variance**0.5]


@dataclass(frozen=True)
class CheckpointMeta:
    """The contents of ``sslray.json``; ``read(url)`` / ``write(url)`` take the checkpoint directory."""

    model: ModelSpec
    in_chans: int
    image_size: int
    scale: float
    mean: list[float]
    std: list[float]
    method: str = ""
    per_channel: bool = False  # channel-agnostic: a C-channel image is embedded as C concatenated vectors
    embed_dim: int | None = None
    channels: list[str] = field(default_factory=list)
    lineage: Lineage = field(default_factory=Lineage)
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config, credentials redacted
    step: int | None = None  # training checkpoints only
    files: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 (format >= 2)
    mpp: float | None = None  # microns per pixel the encoder was trained at, when known
    layer_norm_eps: float | None = None  # set on every LayerNorm when it is not timm's (Hugging Face: 1e-12)
    source: dict[str, Any] = field(default_factory=dict)  # imported: the weights file (URL, SHA-256, layout)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, written back as read

    def __post_init__(self) -> None:
        for name in ("in_chans", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.scale, int | float) or self.scale <= 0:
            raise ValueError(f"scale must be a positive number, got {self.scale!r}")
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must be lists of the same non-zero length, got {self.mean!r} and "
                             f"{self.std!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std!r}")
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive integer, got {self.embed_dim!r}")
        for name in ("mpp", "layer_norm_eps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive number or absent, got {value!r}")
        if not isinstance(self.source, Mapping):
            raise ValueError(f"source must be a mapping, got {type(self.source).__name__}")

    @classmethod
    def from_facts(cls, facts: DataFacts, model: ModelSpec, image_size: int, method: str, embed_dim: int,
                   config: dict[str, Any], **more: Any) -> CheckpointMeta:
        """The metadata of an encoder trained (or initialised) on the data ``facts`` describe."""
        return cls(model=model, in_chans=facts.in_chans, image_size=image_size, scale=facts.scale,
                   mean=list(facts.mean), std=list(facts.std), method=method, per_channel=facts.per_channel,
                   embed_dim=embed_dim, channels=list(facts.channels), lineage=facts.lineage,
                   config=redact(config), **more)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = META_FILE) -> CheckpointMeta:
        """Validate a parsed ``sslray.json``; problems are a CheckpointError naming ``where`` and the key."""
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{where}: expected a JSON object, found {type(data).__name__}")
        for key in REQUIRED:
            if key not in data:
                raise CheckpointError(f"{where}: checkpoint metadata lacks {key!r}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        try:
            model = data["model"]
            values["model"] = ModelSpec(model["name"], model.get("kwargs") or {}) if isinstance(model, Mapping) \
                else ModelSpec(model)
            values["lineage"] = Lineage.from_json(data.get("lineage") or {})
            values.setdefault("format_version", 1)  # format 1 did not always record its version
            return cls(**values, extra={k: v for k, v in data.items() if k not in known})
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{where}: {err}") from None

    def to_json(self) -> dict[str, Any]:
        """The ``sslray.json`` object: the keys sslray has always written, and the optional ones
        (``step``, ``mpp``, ``layer_norm_eps``, ``source``) only when set."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "lineage", "extra")}
        data |= {"model": self.model.to_json(), "lineage": asdict(self.lineage), **self.extra}
        for name in OPTIONAL:
            if data[name] is None or data[name] == {}:
                del data[name]
        return data

    @classmethod
    def read(cls, url: str) -> CheckpointMeta:
        meta_url = storage.join(url, META_FILE)
        if not storage.exists(meta_url):
            raise FileNotFoundError(f"{url} is not an sslray checkpoint: {META_FILE} is missing")
        try:
            data = storage.read_json(meta_url)
        except ValueError as err:
            raise CheckpointError(f"{meta_url}: not valid JSON ({err}); the checkpoint is damaged") from None
        return cls.from_json(data, meta_url)

    def write(self, url: str) -> None:
        """Write ``sslray.json`` into the checkpoint directory ``url`` (last: it vouches for the other files)."""
        storage.write_json(storage.join(url, META_FILE), self.to_json())

    def with_files(self, files: dict[str, str]) -> CheckpointMeta:
        return replace(self, files=dict(files), format_version=FORMAT_VERSION)
