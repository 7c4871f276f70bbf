"""``AggregateConfig``: the ``sslray aggregate`` config, and the pretraining config it trains with.

The keys are those ``sslray aggregate`` has always read (configs/aggregate/spot_dino.yaml): the
spot encoder under ``model``, DINO's head and loss under ``dino``, the grid windows under
``views``, ``OptimConfig``'s keys under ``optim`` (the lr is not scaled with the batch by default).
Training itself is a ``PretrainConfig`` of the ``spot_dino`` method (``pretrain_config``), so it
runs on Ray Train like every method (docs/methods/spot_aggregator.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sslray import tracking
from sslray.config import from_dict, to_dict
from sslray.methods import method_config
from sslray.methods.spot_dino import SpotDINOConfig
from sslray.methods.spot_views import SpotViewConfig
from sslray.models.spot_encoder import SpotModelConfig
from sslray.train.config import PretrainConfig
from sslray.train.optim import OptimConfig

METHOD = "spot_dino"
HEAD_KEYS = ("model", "views", "augment")  # parts of SpotDINOConfig that are not under ``dino``


@dataclass
class AggregateOptimConfig(OptimConfig):
    """``OptimConfig`` whose lr is not scaled with the batch: a spot batch is small and capped at the
    number of spots, so the linear scaling rule (for 256 images) would shrink the lr for no reason."""

    scale_lr_with_batch: bool = False


@dataclass
class AggregateConfig:
    """``sslray aggregate``: an embeddings table -> a spot table (one DINO-trained vector per spot)."""

    embeddings: str = ""  # input: an sslray embeddings table (directory of parquet + _SUCCESS)
    out: str = ""  # output: the spot table URL
    spot_column: str = "image_id"  # tiles sharing a value form one spot
    tile_size: float | None = None  # grid step in pixels; default: inferred from the tile positions
    carry_columns: list[str] = field(default_factory=lambda: ["label", "group", "split", "slide_id", "patient_id"])
    model: SpotModelConfig = field(default_factory=SpotModelConfig)
    dino: dict[str, Any] = field(default_factory=dict)  # SpotDINOConfig's head and loss keys (defaults filled in)
    views: SpotViewConfig = field(default_factory=SpotViewConfig)
    optim: AggregateOptimConfig = field(default_factory=AggregateOptimConfig)
    epochs: float = 100
    steps: int | None = None  # overrides epochs when set
    batch_size: int = 64  # spots per step (capped at the number of spots)
    embed_batch_size: int = 64  # spots per forward pass when embedding the full grids
    log_every: int = 10  # collapse metrics every N steps
    device: str = "auto"  # auto | cpu | cuda | cuda:N: training on a GPU worker when cuda, and the final embedding
    num_workers: int = 1  # Ray Train workers
    cpus_per_worker: float = 1.0  # fractional on a small machine (docs/stack_facts.md)
    seed: int = 0
    overwrite: bool = False
    name: str = "aggregate"  # the run's name: checkpoints under run_dir/checkpoints/<name>; the same name resumes
    run_dir: str = "sslray-runs"  # checkpoints and the default (SQLite) MLflow store
    tracking: tracking.TrackingConfig = field(default_factory=tracking.TrackingConfig)

    def __post_init__(self) -> None:
        for key in ("embeddings", "out", "spot_column"):
            if not getattr(self, key):
                raise ValueError(f"{key} is required")
        if self.tile_size is not None and self.tile_size <= 0:
            raise ValueError(f"tile_size must be > 0 (pixels), got {self.tile_size}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        for key in ("batch_size", "embed_batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        self.method_cfg = self._method_config()
        self.dino = {k: v for k, v in to_dict(self.method_cfg).items() if k not in HEAD_KEYS}

    def _method_config(self) -> SpotDINOConfig:
        unknown = sorted(set(self.dino) & set(HEAD_KEYS))
        if unknown:
            raise ValueError(f"dino: {unknown} are top-level keys (model, views), not dino keys")
        params = {**self.dino, "model": to_dict(self.model), "views": to_dict(self.views)}
        return method_config(METHOD, params)


def pretrain_config(cfg: AggregateConfig, n_spots: int, use_gpu: bool) -> PretrainConfig:
    """The ``spot_dino`` pretraining run of ``cfg`` on ``n_spots`` spots (a batch never exceeds them).

    ``store`` names the embeddings table: it is the run's input, recorded in its lineage.
    """
    per_worker = n_spots // max(cfg.num_workers, 1)
    train = {"epochs": cfg.epochs, "steps": cfg.steps, "batch_size": max(2, min(cfg.batch_size, per_worker)),
             "num_workers": cfg.num_workers, "cpus_per_worker": cfg.cpus_per_worker, "use_gpu": use_gpu,
             "log_every": cfg.log_every, "seed": cfg.seed, "precision": "fp32"}
    return from_dict(PretrainConfig, {
        "store": cfg.embeddings, "run_dir": cfg.run_dir, "name": cfg.name, "train": train,
        "method": {"name": METHOD, **to_dict(cfg.method_cfg)}, "optim": to_dict(cfg.optim),
        "tracking": to_dict(cfg.tracking),
    })
