"""The train function every Ray Train worker runs: build the method, pull tiles, step, report.

Each worker builds the method on the plan's input channels, wraps it for DDP
(``prepare_model``), pulls uint8 tiles from its dataset shard through a shuffle buffer, makes
views on its own device, and reports metrics and checkpoints through ``ray.train.report`` on
one schedule on every rank (a report is a barrier). A restarted worker resumes from the latest
checkpoint with a fresh shuffle. This module does not know which method it trains, nor whether
its samples are tiles or spot grids of tile embeddings (the plan names the column).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from typing import Any

import torch

from sslray import tracking
from sslray.artifacts.checkpoint import CheckpointMeta, load_train_state, save_checkpoint
from sslray.config import from_dict
from sslray.data.shuffle import ShuffleBuffer, shuffled_batches
from sslray.methods import METHODS, Schedule, build_method
from sslray.methods.base import SSLMethod
from sslray.train.config import PretrainConfig
from sslray.train.loop import SSLStep
from sslray.train.plan import TrainingPlan, checkpoint_meta
from sslray.train.progress import Reporter, gather


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; ``config``: the resolved config, the plan, the MLflow run."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(PretrainConfig, config["cfg"])
    plan: TrainingPlan = config["plan"]
    rank = ray.train.get_context().get_world_rank()
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    torch.manual_seed(cfg.train.seed + rank)
    device = ray.train.torch.get_device()

    method, step_fn = build_step(cfg, plan)
    step, epoch = _resume(step_fn, plan.steps_per_epoch)
    meta = checkpoint_meta(cfg, plan.data, method.embed_dim, config["run_id"], encoder=plan.encoder)
    placement = gather(worker_placement(rank, device))
    if rank == 0:
        tracking.set_tags(config["tracking_uri"], config["run_id"], {"sslray.workers": json.dumps(placement)})
    reporter = Reporter(cfg, plan.total_steps, config["tracking_uri"], config["run_id"], rank, step, placement[rank])
    shard = ray.train.get_dataset_shard("train")
    buffer = ShuffleBuffer(max(plan.shuffle_buffer_tiles, cfg.train.batch_size))
    while step < plan.total_steps:
        batches = epoch_batches(shard, cfg.train.batch_size, buffer, (cfg.train.seed, epoch, rank), device,
                                plan.input_column)
        epoch += 1
        reporter.timer.wait_starts()
        for images in batches:
            reporter.timer.data_ready()
            result = step_fn(images, step)
            step += 1
            reporter.after_step(result, len(images))
            if reporter.due(step):
                _report(reporter.metrics(step), step, epoch, step_fn, method, meta, rank,
                        reporter.checkpoint_due(step))
            if step >= plan.total_steps:
                break
            reporter.timer.wait_starts()


def build_step(cfg: PretrainConfig, plan: TrainingPlan) -> tuple[SSLMethod, SSLStep]:
    """The method and its optimisation step on this worker's device, wrapped for DDP."""
    import ray.train.torch

    backbone = METHODS.get(cfg.method_name).build_backbone(cfg.model, cfg.method_cfg, plan.data.in_chans)
    method = build_method(cfg.method_name, cfg.method_cfg, backbone, Schedule(plan.total_steps, plan.steps_per_epoch))
    model = ray.train.torch.prepare_model(method)
    step_fn = SSLStep(
        model, method, cfg.optim, plan.total_steps, plan.steps_per_epoch, plan.global_batch, plan.data.stats,
        monitor_every=cfg.train.log_every, accumulate=cfg.train.accumulate, precision=cfg.train.precision,
    )
    return method, step_fn


def epoch_batches(shard, batch_size: int, buffer: ShuffleBuffer, seed: tuple[int, ...], device: torch.device,
                  column: str = "image"):
    """One pass over this worker's shard as tensors of ``column`` (tiles, pairs or spot grids),
    mixed through a shuffle buffer.

    Whole blocks come out of Ray Data (no re-batching in Arrow); ``shuffled_batches`` mixes
    tiles of many shards into each batch.
    """
    blocks = shard.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=4)
    buffer.clear()  # an epoch cut short by the step limit may leave tiles behind
    for batch in shuffled_batches(({column: b[column]} for b in blocks), batch_size, buffer, seed):
        yield torch.from_numpy(batch[column]).to(device, non_blocking=True)


def _resume(step_fn: SSLStep, steps_per_epoch: int) -> tuple[int, int]:
    """(step, data epoch) to continue from: the latest checkpoint's, or (0, 0).

    The epoch seeds the shuffle, so a resumed run draws new orders instead of replaying
    the first epoch's.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, 0
    with checkpoint.as_directory() as directory:
        state = load_train_state(directory)
    step_fn.load_state_dict(state["state"])
    step = int(state["step"])
    return step, int(state.get("epoch", step // max(steps_per_epoch, 1)))


def _report(metrics: dict[str, Any], step: int, epoch: int, step_fn: SSLStep, method: SSLMethod,
            meta: CheckpointMeta, rank: int, with_checkpoint: bool) -> None:
    """Report metrics, with a checkpoint written by rank 0 when one is due (every rank reports)."""
    import ray.train
    from ray.train import Checkpoint

    if not with_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_checkpoint(tmp, method.encoder(), replace(meta, step=step),
                            train_state={"step": step, "epoch": epoch, "state": step_fn.state_dict()})
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def worker_placement(rank: int, device: torch.device) -> dict[str, str]:
    """Where this worker runs: Ray node id, host and device, for the run's ``sslray.workers`` tag."""
    import socket

    import ray

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"rank": str(rank), "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "device": f"{device} {name}" if device.type == "cuda" else name}
