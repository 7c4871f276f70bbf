"""The GPU suite's three measurements, each on sslray's own pure-torch code (no Ray, no MLflow).

- ``pretrain``: the DINO step as pretraining builds it (``PretrainConfig`` from a method YAML,
  ``TrainingPlan``, the backbone and method from the registry, ``SSLStep``), fed by turns from
  batches already on the device and from the tile-store DataLoader of ``gpu_feed``. Every step
  ends with ``torch.cuda.synchronize``, so a step's time holds its GPU work and the data wait is
  time the GPU sat idle for the next batch.
- ``embed``: ``sslray.infer.embed.encode`` (the checkpoint's recipe: scale, normalise, bf16
  autocast on CUDA, encode) end to end from the store through the DataLoader, features back on
  the host as the embedding actors return them, and model-only on tiles already on the GPU.
- ``mil``: ``run_grid_point`` of ``sslray.evaluate.mil_train`` (inner folds, epoch choice, refit,
  test outputs) for each head x lr, the unit one Ray Tune trial of ``evaluate --protocol mil`` runs.

What each leaves out: Ray Data's tasks and object store, Ray Train's DDP wrapper and reports,
Ray Tune's scheduling, writing embeddings tables, checkpoints and MLflow.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpu_feed import in_order_batches, shard_loader, sync, timed, training_feed

from sslray.artifacts.tile_store import TileStore

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PretrainSizes:
    config: str  # a method YAML under configs/
    overrides: dict[str, Any]
    batch: int
    steps: int  # per leg
    warmup: int
    repeats: int
    resident_batches: int  # batches kept on the device for the in-memory leg
    workers: int  # DataLoader processes reading the store


@dataclass(frozen=True)
class EmbedSizes:
    model: str
    kwargs: dict[str, Any]
    batch: int
    repeats: int
    workers: int


@dataclass(frozen=True)
class MILSizes:
    bags: int
    tiles: tuple[int, int]  # tiles per bag, low and high
    dim: int
    heads: tuple[str, ...]
    lrs: tuple[float, ...]
    epochs: int
    max_tiles: int
    n_outer: int
    n_inner: int


def row(part: str, measure: str, value: float, unit: str, detail: str = "") -> dict[str, Any]:
    return {"part": part, "measure": measure, "value": round(float(value), 4), "unit": unit, "detail": detail}


def pure_step(cfg, plan, device: torch.device):
    """The method and ``SSLStep`` exactly as ``sslray.train.worker.build_step`` makes them, minus
    Ray Train's ``prepare_model`` (DDP on one GPU is a plain module): the module is moved by hand."""
    from sslray.methods import METHODS, Schedule, build_method
    from sslray.train.loop import SSLStep

    backbone = METHODS.get(cfg.method_name).build_backbone(cfg.model, cfg.method_cfg, plan.data.in_chans)
    method = build_method(cfg.method_name, cfg.method_cfg, backbone, Schedule(plan.total_steps, plan.steps_per_epoch))
    method.to(device)
    return SSLStep(method, method, cfg.optim, plan.total_steps, plan.steps_per_epoch, plan.global_batch,
                   plan.data.stats, monitor_every=cfg.train.log_every, accumulate=cfg.train.accumulate,
                   precision=cfg.train.precision)


def _leg(step_fn, next_batch, steps: int, first_step: int, batch: int, device: torch.device):
    """``steps`` steps, each batch from ``next_batch()``; the Window of all but the first."""
    from sslray.train.throughput import StepTimer

    timer = StepTimer()
    for i in range(steps):
        timer.wait_starts()
        images = next_batch(i)
        timer.data_ready()
        step_fn(images, first_step + i)
        sync(device)
        timer.step_done(batch)
    return timer.total


def pretrain(url: str, sizes: PretrainSizes, precision: str, device: torch.device) -> list[dict[str, Any]]:
    from sslray.config import load_config
    from sslray.train.config import PretrainConfig
    from sslray.train.plan import TrainingPlan

    overrides = {**sizes.overrides, "store": url, "run_dir": f"{url}-runs", "train.batch_size": sizes.batch,
                 "train.steps": 1_000_000, "train.precision": precision}
    cfg = load_config(PretrainConfig, ROOT / sizes.config, [f"{k}={v}" for k, v in overrides.items()])
    store = TileStore.open(url).select(cfg.data)
    plan = TrainingPlan.of(cfg, store)
    torch.manual_seed(0)
    step_fn = pure_step(cfg, plan, device)
    feed = training_feed(shard_loader(url, sizes.workers, shuffle=True), sizes.batch,
                         min(plan.shuffle_buffer_tiles, len(store) // 2), device)
    resident = [next(feed) for _ in range(sizes.resident_batches)]  # also starts the loader's workers
    step = 0
    for i in range(sizes.warmup):  # kernels chosen, allocator grown, before any clock runs
        step_fn(resident[i % len(resident)], step)
        step += 1
    legs: dict[str, list] = {"memory": [], "loader": []}
    for _ in range(sizes.repeats):
        for name, source in (("memory", lambda i: resident[i % len(resident)]), ("loader", lambda i: next(feed))):
            legs[name].append(_leg(step_fn, source, sizes.steps, step, sizes.batch, device))
            step += sizes.steps
    rate = {k: statistics.median(w.images_per_s for w in v) for k, v in legs.items()}
    wait = {k: statistics.median(w.wait_fraction for w in v) for k, v in legs.items()}
    views = cfg.method_cfg.views
    detail = (f"{cfg.model.name} {cfg.method_name}, {precision}, batch {sizes.batch}, 2x{views.global_size} + "
              f"{views.n_local}x{views.local_size} crops, out_dim {cfg.method_cfg.out_dim}; median of "
              f"{sizes.repeats} x {sizes.steps} steps; {sizes.workers} loader workers")
    return [row("pretrain", "in_memory_images_per_s", rate["memory"], "images/s", detail),
            row("pretrain", "loader_images_per_s", rate["loader"], "images/s", detail),
            row("pretrain", "loader_over_in_memory", rate["loader"] / rate["memory"], "ratio", detail),
            row("pretrain", "loader_data_wait_share", wait["loader"], "fraction of step time", detail),
            row("pretrain", "in_memory_data_wait_share", wait["memory"], "fraction of step time", detail)]


def embed(url: str, sizes: EmbedSizes, device: torch.device) -> list[dict[str, Any]]:
    from sslray.artifacts.checkpoint_meta import CheckpointMeta, ModelSpec
    from sslray.infer.embed import encode
    from sslray.models.backbones import BackboneConfig, create_backbone

    info = TileStore.open(url).info
    torch.manual_seed(0)
    encoder = create_backbone(BackboneConfig(sizes.model, dict(sizes.kwargs)), info.n_channels).to(device).eval()
    meta = CheckpointMeta(ModelSpec(sizes.model, dict(sizes.kwargs)), in_chans=info.n_channels,
                          image_size=info.tile_size, scale=float(info.scale), mean=list(info.mean), std=list(info.std))
    loader = shard_loader(url, sizes.workers, shuffle=False)
    n = info.n_tiles
    resident = torch.from_numpy(TileStore.open(url).read(0, min(n, 8 * sizes.batch))).to(device)
    starts = [(i * sizes.batch) % max(len(resident) - sizes.batch + 1, 1) for i in range(-(-n // sizes.batch))]
    encoded = sum(len(resident[start : start + sizes.batch]) for start in starts)  # tiles per model-only pass

    def end_to_end() -> None:
        for tiles in in_order_batches(loader, sizes.batch):
            encode(encoder, torch.from_numpy(tiles).to(device, non_blocking=True), meta, device).cpu()

    def model_only() -> None:
        for start in starts:
            encode(encoder, resident[start : start + sizes.batch], meta, device)

    with torch.inference_mode():
        end_to_end()  # warm-up: starts the loader's workers, picks the kernels
        e2e = statistics.median(n / timed(device, end_to_end)[0] for _ in range(sizes.repeats))
        model = statistics.median(encoded / timed(device, model_only)[0] for _ in range(sizes.repeats))
    detail = (f"{sizes.model}, {'bf16' if device.type == 'cuda' else 'fp32'}, batch {sizes.batch}, {n} tiles of "
              f"{info.tile_size} px x {info.n_channels} ch; median of {sizes.repeats}; {sizes.workers} loader workers")
    return [row("embed", "end_to_end_tiles_per_s", e2e, "tiles/s", detail + "; store read -> encode -> host"),
            row("embed", "model_only_tiles_per_s", model, "tiles/s", detail + "; uint8 tiles already on the device"),
            row("embed", "end_to_end_over_model_only", e2e / model, "ratio", detail)]


def synthetic_bags(sizes: MILSizes, seed: int = 0):
    """Bags of Gaussian features; a positive bag holds a few tiles shifted along one feature."""
    from sslray.evaluate.bags import Bags

    rng = np.random.default_rng(seed)
    counts = rng.integers(sizes.tiles[0], sizes.tiles[1] + 1, sizes.bags)
    features = rng.normal(size=(int(counts.sum()), sizes.dim)).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    labels = np.where(np.arange(sizes.bags) % 2 == 1, "tumour", "normal")
    for i in np.flatnonzero(labels == "tumour"):
        features[offsets[i] : offsets[i] + max(1, counts[i] // 20), 0] += 3.0
    ids = np.array([f"slide{i:04d}" for i in range(sizes.bags)])
    return Bags(ids=ids, features=features, offsets=offsets, bag_column="slide_id", labels=labels)


def mil(sizes: MILSizes, device: torch.device) -> list[dict[str, Any]]:
    from sslray.evaluate.folds import nested_folds
    from sslray.evaluate.mil_train import TrainSettings, run_grid_point

    bags = synthetic_bags(sizes)
    fold = nested_folds(bags.targets(), bags.ids, n_outer=sizes.n_outer, n_inner=sizes.n_inner)[0]
    settings = {"epochs": sizes.epochs, "max_tiles": sizes.max_tiles, "device": device.type}
    run_grid_point(bags, fold, TrainSettings(sizes.heads[0], **{**settings, "epochs": 1}))  # CUDA and cuBLAS start
    rows, seconds = [], []
    for head in sizes.heads:
        for lr in sizes.lrs:
            trial = TrainSettings(head, lr, **settings)
            took, point = timed(device, lambda trial=trial: run_grid_point(bags, fold, trial))
            seconds.append(took)
            rows.append(row("mil", "trial_seconds", took, "s",
                            f"{head}, lr {lr:g}: best inner AUC {point.best_val:.3f} at epoch {point.best_epoch}"))
    detail = (f"{len(rows)} trials ({', '.join(sizes.heads)} x lr {', '.join(f'{lr:g}' for lr in sizes.lrs)}); "
              f"{sizes.bags} bags of {sizes.tiles[0]}-{sizes.tiles[1]} tiles x {sizes.dim}, {sizes.epochs} epochs, "
              f"max_tiles {sizes.max_tiles}, {sizes.n_inner} inner folds + refit")
    return [*rows, row("mil", "mean_trial_seconds", statistics.mean(seconds), "s", detail)]
