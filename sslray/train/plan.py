"""The training plan: step counts and data facts, computed once on the driver from the store and
the config, and handed to every worker.

Workers must agree on the step count (``ray.train.report`` is a barrier every rank reaches equally
often), so it is decided once here rather than by each worker from its own shard. The data facts
(channels, intensity scaling, lineage) go into every checkpoint the run writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sslray.artifacts.checkpoint_meta import CheckpointMeta, DataFacts, ModelSpec
from sslray.artifacts.tile_store import TileStore
from sslray.config import ConfigError, to_dict
from sslray.data.pairs import PairPolicy, make_pairs
from sslray.methods import METHODS
from sslray.methods.base import EMBEDDING_GRIDS, TILES
from sslray.train.config import PretrainConfig

INPUT_COLUMNS = {TILES: "image", EMBEDDING_GRIDS: "grid"}  # the dataset column each input kind trains on


@dataclass(frozen=True)
class TrainingPlan:
    """What every worker needs to run the same steps on the same data."""

    total_steps: int
    steps_per_epoch: int
    global_batch: int  # per-worker batch x workers
    shuffle_buffer_tiles: int  # per worker (samples: tiles, pairs or spot grids)
    data: DataFacts
    input_kind: str = TILES  # TILES (a tile store) or EMBEDDING_GRIDS (spot grids of an embeddings table)
    encoder: ModelSpec | None = None  # the encoder sslray.json records when it is not cfg.model (spot_dino)

    def __post_init__(self) -> None:
        for name in ("total_steps", "steps_per_epoch", "global_batch", "shuffle_buffer_tiles"):
            if getattr(self, name) < 1:
                raise ValueError(f"training plan: {name} must be >= 1, got {getattr(self, name)}")
        if self.input_kind not in INPUT_COLUMNS:
            raise ValueError(f"training plan: input_kind must be one of {sorted(INPUT_COLUMNS)}, got {self.input_kind!r}")

    @property
    def input_column(self) -> str:
        """The dataset column the workers train on."""
        return INPUT_COLUMNS[self.input_kind]

    @classmethod
    def of(cls, cfg: PretrainConfig, store: TileStore) -> TrainingPlan:
        """The plan for ``cfg`` on the store view ``store``; too few samples for one batch is a ConfigError."""
        pairs = training_pairs(cfg)
        samples = len(make_pairs(store.store_manifest, pairs, store.rows)) if pairs else len(store)
        buffer_tiles = max(2 * cfg.train.batch_size, cfg.train.shuffle_buffer_mb * 2**20 // store.info.tile_bytes)
        facts = DataFacts.of(store, METHODS.get(cfg.method_name).channel_agnostic)
        return cls.of_samples(cfg, samples, int(buffer_tiles), facts, f"the store {store.url}")

    @classmethod
    def of_samples(cls, cfg: PretrainConfig, samples: int, buffer: int, facts: DataFacts, source: str,
                   input_kind: str = TILES, encoder: ModelSpec | None = None) -> TrainingPlan:
        """The plan for ``samples`` training samples of ``source`` (tiles, pairs or spot grids)."""
        workers = max(cfg.train.num_workers, 1)
        global_batch = cfg.train.batch_size * workers
        if samples < global_batch:
            raise ConfigError(
                f"train.batch_size: {source} gives {samples} training samples, fewer than one global "
                f"batch ({cfg.train.batch_size} x {workers} workers)"
            )
        steps_per_epoch = samples // global_batch
        total = cfg.train.steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))
        return cls(total, steps_per_epoch, global_batch, buffer, facts, input_kind, encoder)


def training_pairs(cfg: PretrainConfig) -> PairPolicy | None:
    """The magnification-pair policy when the method trains on pairs (MPCS), else None."""
    return cfg.method_cfg.policy if METHODS.get(cfg.method_name).needs_pairs else None


def checkpoint_meta(cfg: PretrainConfig, facts: DataFacts, embed_dim: int, run_id: str | None = None,
                    method: str | None = None, encoder: ModelSpec | None = None) -> CheckpointMeta:
    """The ``sslray.json`` of an encoder built by ``cfg`` on the data ``facts`` describe; ``run_id``
    is the MLflow run that trained it, ``method`` overrides the method name (``random_init``).

    ``encoder`` names a model that is not a timm backbone (the spot encoder); its input is one
    token per grid cell, so ``image_size`` is 1 (docs/methods/spot_aggregator.md)."""
    facts = replace(facts, lineage=replace(facts.lineage, mlflow_run_id=run_id))
    model = encoder or ModelSpec(cfg.model.name, dict(cfg.model.kwargs))
    return CheckpointMeta.from_facts(facts, model, 1 if encoder else cfg.input_size, method or cfg.method_name,
                                     embed_dim, to_dict(cfg))
