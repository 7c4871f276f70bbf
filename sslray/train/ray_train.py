"""Pretraining on Ray Train: ``TorchTrainer`` workers fed by a Ray Data stream of tiles.

The driver opens the store, resolves step counts and tracking, and starts the trainer.
Each worker builds the method, wraps it for DDP (``prepare_model``), pulls uint8 tiles from
its dataset shard, makes views on its own device, and reports metrics and checkpoints
through ``ray.train.report``. Re-running with the same ``name`` and ``out`` resumes from
the latest checkpoint (Train V2 semantics).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sslray import storage, tracking
from sslray.config import ConfigError, from_dict, to_dict
from sslray.data.pairs import make_pairs
from sslray.data.shuffle import ShuffleBuffer, shuffled_batches
from sslray.data.store import MANIFEST, TileStore
from sslray.methods import METHODS, Schedule, build_method
from sslray.methods.base import SSLMethod
from sslray.methods.monitor import collapse_warning
from sslray.models.backbones import create_backbone
from sslray.runtime import ensure_ray
from sslray.train.checkpoint import load_train_state, save_checkpoint
from sslray.train.config import PretrainConfig
from sslray.train.loop import SSLStep
from sslray.train.throughput import (
    WAIT_WARNING,
    StepTimer,
    WorkerSummary,
    format_summary,
    run_summary,
    window_metrics,
)

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    checkpoint: str  # URL of the final checkpoint directory
    run_id: str
    tracking_uri: str  # redacted, safe to print (summary.json, the CLI's JSON)
    steps: int
    summary: dict[str, Any] | None = None  # throughput of this attempt (None when it found the run finished)


def run_pretrain(cfg: PretrainConfig) -> PretrainResult:
    uri = tracking.resolve_uri(cfg.tracking, cfg.out)  # inline credentials, a dead server: fail before Ray starts
    ensure_ray()
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # the workers print their own progress line
    store = TileStore.open(cfg.store).select(cfg.data)
    plan = training_plan(cfg, store)
    run_id = _tracking_run(cfg, uri, plan)
    storage.write_json(storage.join(checkpoint_root(cfg.out), cfg.name, "sslray_config.json"),
                       tracking.redact(to_dict(cfg)))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "plan": plan, "tracking_uri": uri, "run_id": run_id},
        scaling_config=ScalingConfig(
            num_workers=max(cfg.train.num_workers, 1),
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker, **({"GPU": 1} if cfg.train.use_gpu else {})},
            placement_strategy=cfg.train.placement_strategy,
        ),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=checkpoint_root(cfg.out),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        ),
        datasets={"train": store.to_ray_dataset(shuffle=True, pairs=training_pairs(cfg))},
    )
    try:
        result = trainer.fit()
    except BaseException:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    checkpoint = _checkpoint_url(result.checkpoint)
    summary = (result.metrics or {}).get("summary")
    _log_final(uri, run_id, checkpoint, summary)
    if summary:
        print(format_summary(summary, checkpoint, tracking.ui_hint(uri)), file=sys.stderr, flush=True)
    return PretrainResult(checkpoint, run_id, tracking.redact_url(uri), plan["total_steps"], summary)


def checkpoint_root(out: str) -> str:
    return storage.join(storage.local_path(out), "checkpoints")


def training_plan(cfg: PretrainConfig, store: TileStore) -> dict[str, Any]:
    """Step counts and the data facts every worker needs (computed once, on the driver)."""
    workers = max(cfg.train.num_workers, 1)
    global_batch = cfg.train.batch_size * workers
    pairs = training_pairs(cfg)
    samples = len(make_pairs(store.store_manifest, pairs, store.rows)) if pairs else len(store)
    if samples < global_batch:
        raise ConfigError(
            f"train.batch_size: the store {store.url} gives {samples} training samples, fewer than one global batch "
            f"({cfg.train.batch_size} x {workers} workers)"
        )
    steps_per_epoch = samples // global_batch
    total = cfg.train.steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))
    tile_bytes = store.info.n_channels * store.info.tile_size**2 * np.dtype(store.info.dtype).itemsize
    buffer_tiles = max(2 * cfg.train.batch_size, cfg.train.shuffle_buffer_mb * 2**20 // tile_bytes)
    return {"total_steps": total, "steps_per_epoch": steps_per_epoch, "global_batch": global_batch,
            "shuffle_buffer_tiles": int(buffer_tiles),
            **data_facts(store, METHODS.get(cfg.method_name).channel_agnostic)}


def data_facts(store: TileStore, channel_agnostic: bool = False) -> dict[str, Any]:
    """What a checkpoint must remember of the data: channels, intensity scaling, lineage.

    A channel-agnostic encoder sees one channel at a time, so it gets one mean/std pooled
    over all channels and ``in_chans`` 1, and embeds a C-channel image channel by channel.
    """
    info = store.info
    mean, std = (pooled_stats(info.mean, info.std) if channel_agnostic else (info.mean, info.std))
    return {
        "stats": {"scale": info.scale, "mean": mean, "std": std, "channels": info.channels},
        "in_chans": 1 if channel_agnostic else info.n_channels,
        "per_channel": channel_agnostic,
        "lineage": {"store": tracking.redact(store.url), "manifest_sha256": manifest_hash(store.url),
                    "selection": to_dict(store.selection)},
    }


def training_pairs(cfg: PretrainConfig):
    """The magnification-pair policy when the method trains on pairs (MPCS), else None."""
    return cfg.method_cfg.policy if METHODS.get(cfg.method_name).needs_pairs else None


def pooled_stats(means: list[float], stds: list[float]) -> tuple[list[float], list[float]]:
    """Mean and std of all channels' pixels taken together (equal pixel counts per channel)."""
    mean = sum(means) / len(means)
    variance = sum(s**2 + (m - mean) ** 2 for m, s in zip(means, stds, strict=True)) / len(means)
    return [mean], [variance**0.5]


def manifest_hash(url: str) -> str:
    return hashlib.sha256(storage.read_bytes(storage.join(url, MANIFEST))).hexdigest()


def _tracking_run(cfg: PretrainConfig, uri: str, plan: dict) -> str:
    """One MLflow run per pretraining: a resubmitted job (same ``out`` and ``name``) logs on
    into the run it started, so its metrics continue on one page instead of a new one."""
    marker = storage.join(checkpoint_root(cfg.out), cfg.name, "mlflow_run.json")
    if storage.exists(marker):
        saved = storage.read_json(marker)
        if saved.get("uri") == tracking.redact(uri) and tracking.reopen_run(uri, saved["run_id"]):
            log.info("resuming: logging into MLflow run %s", saved["run_id"])
            return saved["run_id"]
    tags = {
        "sslray.stage": "pretrain",
        "sslray.method": cfg.method_name,
        "sslray.store": plan["lineage"]["store"],
        "sslray.manifest_sha256": plan["lineage"]["manifest_sha256"],
    }
    run_id = tracking.start_run(uri, cfg.tracking.experiment, cfg.name, cfg.out, tags)
    tracking.log_config(uri, run_id, to_dict(cfg))
    storage.write_json(marker, {"run_id": run_id, "uri": tracking.redact(uri)})
    return run_id


def _checkpoint_url(checkpoint) -> str:
    if checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    fs_type = type(checkpoint.filesystem).__name__
    if fs_type == "S3FileSystem":
        return f"s3://{checkpoint.path}"
    if fs_type == "GcsFileSystem":
        return f"gs://{checkpoint.path}"
    return checkpoint.path


def _log_final(uri: str, run_id: str, checkpoint: str, summary: dict | None) -> None:
    import mlflow

    from sslray.train.checkpoint import ENCODER_FILE, META_FILE

    client = mlflow.MlflowClient(uri)
    client.set_tag(run_id, "sslray.checkpoint", tracking.redact(checkpoint))
    if summary:
        tracking.log_json(uri, run_id, summary, "throughput.json")
    with tempfile.TemporaryDirectory() as tmp:
        for name in (ENCODER_FILE, META_FILE):
            path = f"{tmp}/{name}"
            with open(path, "wb") as handle:
                handle.write(storage.read_bytes(storage.join(checkpoint, name)))
            client.log_artifact(run_id, path, "checkpoint")
    tracking.end_run(uri, run_id)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(PretrainConfig, config["cfg"])
    plan = config["plan"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    torch.manual_seed(cfg.train.seed + rank)
    device = ray.train.torch.get_device()

    method, step_fn = build_step(cfg, plan)
    step, epoch = _resume(step_fn, plan["steps_per_epoch"])
    meta = checkpoint_meta(cfg, plan, method.embed_dim)
    placement = gather(worker_placement(rank, device))
    if rank == 0:
        tracking.set_tags(config["tracking_uri"], config["run_id"], {"sslray.workers": json.dumps(placement)})
    reporter = _Reporter(cfg, plan, config, rank, step, placement[rank])
    shard = ray.train.get_dataset_shard("train")
    buffer = ShuffleBuffer(max(plan["shuffle_buffer_tiles"], cfg.train.batch_size))
    while step < plan["total_steps"]:
        batches = epoch_batches(shard, cfg.train.batch_size, buffer, (cfg.train.seed, epoch, rank), device)
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
            if step >= plan["total_steps"]:
                break
            reporter.timer.wait_starts()


def build_step(cfg: PretrainConfig, plan: dict[str, Any]) -> tuple[SSLMethod, SSLStep]:
    """The method and its optimisation step on this worker's device, wrapped for DDP."""
    import ray.train.torch

    backbone = create_backbone(cfg.model, plan["in_chans"])
    method = build_method(
        cfg.method_name, cfg.method_cfg, backbone, Schedule(plan["total_steps"], plan["steps_per_epoch"])
    )
    model = ray.train.torch.prepare_model(method)
    step_fn = SSLStep(
        model, method, cfg.optim, plan["total_steps"], plan["steps_per_epoch"], plan["global_batch"], plan["stats"],
        monitor_every=cfg.train.log_every, accumulate=cfg.train.accumulate, precision=cfg.train.precision,
    )
    return method, step_fn


def epoch_batches(shard, batch_size: int, buffer: ShuffleBuffer, seed: tuple[int, ...], device: torch.device):
    """One pass over this worker's shard as image tensors, mixed through a shuffle buffer.

    Whole blocks come out of Ray Data (no re-batching in Arrow); ``shuffled_batches`` mixes
    tiles of many shards into each batch.
    """
    blocks = shard.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=4)
    buffer.clear()  # an epoch cut short by the step limit may leave tiles behind
    for batch in shuffled_batches(({"image": b["image"]} for b in blocks), batch_size, buffer, seed):
        yield torch.from_numpy(batch["image"]).to(device, non_blocking=True)


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


def checkpoint_meta(cfg: PretrainConfig, plan: dict, embed_dim: int) -> dict[str, Any]:
    stats = plan["stats"]
    return {
        "method": cfg.method_name,
        "model": to_dict(cfg.model) | {"weights": None},
        "in_chans": plan["in_chans"],
        "per_channel": plan.get("per_channel", False),  # embed a C-channel image as C concatenated vectors
        "image_size": cfg.input_size,
        "embed_dim": embed_dim,
        "channels": stats["channels"],
        "scale": stats["scale"],
        "mean": stats["mean"],
        "std": stats["std"],
        "lineage": plan["lineage"],
        "config": tracking.redact(to_dict(cfg)),
    }


def _report(metrics, step, epoch, step_fn, method, meta, rank, with_checkpoint) -> None:
    import ray.train
    from ray.train import Checkpoint

    if not with_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_checkpoint(tmp, method.encoder(), meta | {"step": step},
                            train_state={"step": step, "epoch": epoch, "state": step_fn.state_dict()})
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


class _Reporter:
    """Per-step timing (data wait vs compute), console progress and MLflow metrics.

    Every rank times its own steps; at each log step the ranks' windows are gathered so rank 0
    logs the run's images/s and the worst-fed worker's data wait, and at the last step their
    totals, so the summary has one row per worker. Gathers are collectives: every rank reaches
    them at the same steps because all ranks run the same step count.
    """

    def __init__(self, cfg: PretrainConfig, plan: dict, config: dict, rank: int, start_step: int,
                 placement: dict[str, str]) -> None:
        self.cfg = cfg
        self.total = plan["total_steps"]
        self.rank = rank
        self.uri = config["tracking_uri"]
        self.run_id = config["run_id"]
        self.start_step = start_step
        self.placement = placement
        self.started = time.perf_counter()
        self.timer = StepTimer()
        self.first_loss: float | None = None
        self.last: dict[str, float] = {}

    def after_step(self, result, n_images: int) -> None:
        self.timer.step_done(n_images)
        if self.first_loss is None:
            self.first_loss = result.loss
        self.last = {"loss": result.loss, "lr": result.lr, "weight_decay": result.weight_decay, **result.metrics}

    def due(self, step: int) -> bool:
        return step % max(self.cfg.train.log_every, 1) == 0 or self.checkpoint_due(step)

    def checkpoint_due(self, step: int) -> bool:
        every = self.cfg.train.checkpoint_every
        return step == self.total or (every > 0 and step % every == 0)

    def metrics(self, step: int) -> dict[str, Any]:
        throughput = window_metrics(gather(self.timer.take_window()))
        metrics: dict[str, Any] = {**self.last, **throughput, "step": step}
        if self.rank == 0:
            tracking.log_metrics(self.uri, self.run_id, {k: v for k, v in metrics.items() if k != "step"}, step)
            self._print_progress(step, metrics)
            past_start_up = step > self.start_step + self.cfg.train.log_every
            if throughput["data_wait_fraction"] > WAIT_WARNING and past_start_up:
                log.warning("waiting for data %.0f%% of the time: the input pipeline is the bottleneck",
                            100 * throughput["data_wait_fraction"])
            if "feature_std" in metrics and (warning := collapse_warning(metrics)):
                log.warning("step %d: %s", step, warning)
        if step == self.total:
            metrics["summary"] = self.summary(step)
        return metrics

    def summary(self, step: int) -> dict[str, Any]:
        mine = WorkerSummary.of(self.rank, self.placement["node"], self.placement["device"], self.timer)
        workers = gather(mine)
        return run_summary(workers, self.start_step, step, time.perf_counter() - self.started,
                           self.first_loss, self.last.get("loss"))

    def _print_progress(self, step: int, metrics: dict[str, float]) -> None:
        elapsed = time.perf_counter() - self.started
        done = step - self.start_step
        eta = elapsed / max(done, 1) * (self.total - step)
        print(
            f"[sslray] step {step}/{self.total} loss {metrics['loss']:.4f} "
            f"{metrics['images_per_s']:.1f} img/s data-wait {100 * metrics['data_wait_fraction']:.0f}% "
            f"ETA {eta:.0f}s",
            flush=True,
        )


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def worker_placement(rank: int, device: torch.device) -> dict[str, str]:
    """Where this worker runs: Ray node id, host and device, for the run's ``sslray.workers`` tag."""
    import socket

    import ray

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"rank": str(rank), "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "device": f"{device} {name}" if device.type == "cuda" else name}
