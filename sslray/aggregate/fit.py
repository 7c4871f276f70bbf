"""Training the aggregator on Ray Train: spot grids -> one Ray Data dataset -> the pretraining workers.

The driver lays every spot out once as a (n_spots, H, W, D) float32 tensor (``grid_batch``, NaN
in empty cells) and hands it to Ray Data in memory (``from_numpy``); Ray Train shards it across
the workers as it does a tile store, and each worker's shuffle buffer mixes it like tiles. Why
this and not each worker reading the table: the grids of an embeddings table are small (1,000
spots of 15 x 15 tiles at D = 384 are 350 MB; the quickstart's are kilobytes), the grid layout is
built once instead of once per worker, and an in-memory dataset needs no read tasks, so Train
workers holding fractional CPUs on 2 cores leave Ray Data nothing to wait for
(docs/stack_facts.md). The run is the ``spot_dino`` method's pretraining run: the same workers,
step, checkpoint format and checksums, and the same ``name`` + ``run_dir`` resume it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sslray.artifacts.checkpoint_meta import DataFacts, Lineage, ModelSpec
from sslray.config import to_dict
from sslray.credentials import redact
from sslray.methods.base import EMBEDDING_GRIDS
from sslray.methods.spot_dino import ENCODER_NAME
from sslray.stage import StageRun
from sslray.train.config import PretrainConfig
from sslray.train.plan import TrainingPlan


def grid_facts(embeddings_url: str, dim: int) -> DataFacts:
    """The data facts of a grids run: ``dim`` input features per token, no intensity scaling
    (the tokens are embeddings, fed as they are), the embeddings table as lineage."""
    return DataFacts(scale=1.0, mean=[0.0], std=[1.0], channels=[], in_chans=dim, per_channel=False,
                     lineage=Lineage(store=redact(embeddings_url)))


def grid_plan(cfg: PretrainConfig, grids: np.ndarray) -> TrainingPlan:
    """Steps over ``grids`` (every spot in each worker's shuffle buffer: an epoch is a permutation)."""
    facts = grid_facts(cfg.store, grids.shape[-1])
    encoder = ModelSpec(ENCODER_NAME, to_dict(cfg.method_cfg.model))
    return TrainingPlan.of_samples(cfg, len(grids), len(grids), facts, f"the embeddings table {cfg.store}",
                                   EMBEDDING_GRIDS, encoder)


def train_on_grids(cfg: PretrainConfig, grids: np.ndarray, run: StageRun) -> tuple[str, dict[str, Any]]:
    """Train ``cfg`` (a ``spot_dino`` run) on the grid tensor ``grids``; the final checkpoint's URL
    and the last reported metrics."""
    from sslray.runtime import ensure_ray
    from sslray.train.driver import fit

    ensure_ray()
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # the workers print their own progress line
    plan = grid_plan(cfg, grids)
    dataset = ray.data.from_numpy(grids).rename_columns({"data": plan.input_column})
    loop_config = {"cfg": to_dict(cfg), "plan": plan, "tracking_uri": run.uri, "run_id": run.run_id}
    return fit(cfg, loop_config, dataset)
