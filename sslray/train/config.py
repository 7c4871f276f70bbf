"""The pretraining config: one dataclass tree, validated when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from sslray.artifacts.selection import Selection
from sslray.config import ConfigError, to_dict
from sslray.models.backbones import BackboneConfig, is_vit
from sslray.tracking import TrackingConfig
from sslray.train.optim import OptimConfig

__all__ = ["OptimConfig", "PretrainConfig", "TrainConfig"]


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class TrainConfig:
    epochs: float = 100
    steps: int | None = None  # overrides epochs when set
    batch_size: int = 64  # per worker
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    placement_strategy: str = "PACK"  # Ray placement group strategy: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    torch_threads: int | None = None  # default: the CPUs Ray gives the worker
    checkpoint_every: int = 0  # steps; 0 = only at the end
    log_every: int = 10
    shuffle_buffer_mb: int = 512  # per worker: tiles from many shards are mixed into every batch
    accumulate: int = 1  # micro-batches per batch (gradient accumulation, to fit memory)
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32
    max_failures: int = 0  # worker failures Ray Train recovers from (restarting from the last checkpoint)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"train.batch_size must be >= 2, got {self.batch_size}")
        if self.num_workers < 0 or self.cpus_per_worker <= 0:
            raise ValueError("train.num_workers must be >= 0 and train.cpus_per_worker > 0")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"train.steps must be >= 1, got {self.steps}")
        if self.accumulate < 1 or self.batch_size % self.accumulate:
            raise ValueError(f"train.accumulate must be >= 1 and divide train.batch_size ({self.batch_size}), "
                             f"got {self.accumulate}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ValueError(f"train.placement_strategy must be one of {', '.join(PLACEMENT_STRATEGIES)}, "
                             f"got {self.placement_strategy!r}")
        if self.shuffle_buffer_mb < 1:
            raise ValueError(f"train.shuffle_buffer_mb must be >= 1, got {self.shuffle_buffer_mb}")
        if self.epochs <= 0:
            raise ValueError(f"train.epochs must be > 0, got {self.epochs}")


@dataclass
class PretrainConfig:
    store: str = ""
    data: Selection = field(default_factory=Selection)  # which tiles and channels of the store to train on
    run_dir: str = "sslray-runs"  # checkpoints (the published output) and the default MLflow store
    name: str = "pretrain"
    model: BackboneConfig = field(default_factory=BackboneConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "dino"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out": "run_dir"}

    def __post_init__(self) -> None:
        from sslray.methods import method_config

        params = dict(self.method)
        name = params.pop("name", "dino")
        self.method_cfg = method_config(name, params)
        # Keep the resolved form (defaults filled in) so the saved config is complete.
        self.method = {"name": name, **to_dict(self.method_cfg)}
        if is_vit(self.model.name) and "img_size" not in self.model.kwargs:
            self.model.kwargs["img_size"] = self.input_size  # native size for the global views
        if not self.store:
            raise ConfigError("store: the tile store URL is required (store=PATH or s3://...)")

    @property
    def method_name(self) -> str:
        return self.method["name"]

    @property
    def input_size(self) -> int:
        """The image size the encoder sees at embedding time: the method's (global) view size."""
        views = getattr(self.method_cfg, "views", None)
        view_size = getattr(views, "global_size", None) or getattr(self.method_cfg, "view_size", None)
        return int(self.model.kwargs.get("img_size") or view_size or 224)
