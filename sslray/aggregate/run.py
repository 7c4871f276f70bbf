"""``sslray aggregate``: an embeddings table -> the spot_dino run on Ray Train -> a published spot table.

The stage lifecycle of every sslray stage (``sslray.stage``): the destination is checked before
any work, the run is tracked (nested under a pipeline's run), and the table is published
atomically with the trained teacher encoder under ``_aggregator/`` (docs/methods/spot_aggregator.md).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from sslray import storage, tracking
from sslray.aggregate.aggregator import embed_spots, load_aggregator, resolve_device, save_aggregator
from sslray.aggregate.config import AggregateConfig, pretrain_config
from sslray.aggregate.fit import train_on_grids
from sslray.aggregate.inputs import read_embeddings, table_grids
from sslray.aggregate.spot_rows import spot_table
from sslray.artifacts.checkpoint import read_meta
from sslray.artifacts.spot_table import AGGREGATOR_DIR, SpotTable
from sslray.artifacts.vector_table import embedding_matrix
from sslray.config import to_dict
from sslray.methods.monitor import collapse_metrics
from sslray.methods.spot_views import grid_batch
from sslray.stage import input_name, publishing, tracked_run


def run_aggregate(cfg: AggregateConfig) -> str:
    """Train the spot aggregator on ``cfg.embeddings`` and publish the spot table; returns its URL."""
    storage.check_destination(cfg.out, "spot_table", "spot table", cfg.overwrite)  # before any work
    device = resolve_device(cfg.device)
    table = read_embeddings(cfg.embeddings, cfg.spot_column, cfg.carry_columns)
    grids, grid_step = table_grids(table, cfg.spot_column, cfg.tile_size)
    if len(grids) < 2:
        raise ValueError(f"{cfg.embeddings} has {len(grids)} spot(s) by {cfg.spot_column!r}; DINO needs at least 2")
    tiles = embedding_matrix(table.column("embedding"))
    train_cfg = pretrain_config(cfg, len(grids), device.type == "cuda")
    with tracked_run(cfg.tracking, cfg.run_dir, stage="aggregate", input=input_name(cfg.embeddings),
                     config=to_dict(cfg), tags=_tags(cfg), resume_marker=_marker(cfg)) as run:
        run.log_metrics({"n_spots": len(grids), "n_tiles": table.num_rows, "input_dim": tiles.shape[1],
                         "grid_step_x": grid_step[0], "grid_step_y": grid_step[1]})
        started = time.perf_counter()
        checkpoint, metrics = train_on_grids(train_cfg, grid_batch(tiles, grids), run)
        encoder, _ = load_aggregator(checkpoint)
        features = embed_spots(encoder, torch.from_numpy(tiles), grids, cfg.embed_batch_size, device)
        final = {f"spots_{k}": v for k, v in collapse_metrics(torch.from_numpy(features)).items()}
        run.log_metrics({**final, "seconds": time.perf_counter() - started}, train_cfg.train.steps)
        carry = [c for c in cfg.carry_columns if c in table.column_names and c != cfg.spot_column]
        rows, carried = spot_table(table, grids, cfg.spot_column, features, carry)
        meta = read_meta(checkpoint)
        meta = replace(meta, extra={**meta.extra, "spot_column": cfg.spot_column, "grid_step": list(grid_step)})
        with publishing(cfg.out, kind="spot_table", what="spot table", overwrite=cfg.overwrite) as publication:
            SpotTable(cfg.out, "spot_table", rows, encoder.embed_dim, cfg.spot_column).write(publication.staging)
            save_aggregator(storage.join(publication.staging, AGGREGATOR_DIR), encoder, meta)
            publication.info.update(_info(cfg, rows.num_rows, features, carried, run.run_id))
    return cfg.out


def _tags(cfg: AggregateConfig) -> dict[str, str]:
    return {"sslray.method": "spot_dino", "sslray.embeddings": tracking.redact(cfg.embeddings),
            "sslray.spots": tracking.redact(cfg.out), "sslray.spot_column": cfg.spot_column}


def _marker(cfg: AggregateConfig) -> str:
    """The file naming the run's MLflow run, beside its checkpoints: a rerun with the same name resumes both."""
    from sslray.train.driver import checkpoint_root

    return storage.join(checkpoint_root(cfg.run_dir), cfg.name, "mlflow_run.json")


def _info(cfg: AggregateConfig, n_rows: int, features: np.ndarray, carried: list[str], run_id: str | None) -> dict:
    """The ``_SUCCESS`` record of the spot table (the keys it has always had)."""
    return {"embeddings": tracking.redact(cfg.embeddings), "spot_column": cfg.spot_column, "n_rows": n_rows,
            "dim": int(features.shape[1]), "l2_normalized": True, "carried_columns": carried,
            "aggregator": AGGREGATOR_DIR, "mlflow_run_id": run_id}
