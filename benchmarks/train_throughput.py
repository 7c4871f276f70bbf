"""What the input pipeline costs a training step: the real Ray Data feed vs. tensors in memory.

One Ray Train worker builds the method and its optimisation step exactly as pretraining does
(``sslray.train.worker.build_step``), then alternates two legs of the same number of steps:

- pipeline: full epochs through the training loop's own feed (``epoch_batches``: the
  worker's Ray Data shard of the tile store, whole blocks into the shuffle buffer, batches
  moved to the device), each epoch restarting the stream as a long run does;
- memory: the same step on batches already on the device (collected once from the feed).

The ratio pipeline / memory images/s is the pipeline's cost (target: at least 0.95); the
pipeline leg's data-wait fraction says where the rest went. Median of ``--repeats`` pairs
after a warm-up.

Presets: ``cpu`` is the quickstart recipe (4-block ViT of width 96, DINO with 2 global 48-px
and 2 local 24-px crops) on 64-px two-channel tiles; ``gpu`` is ViT-S/16 DINO multi-crop (2 x
224 + 8 x 96, out_dim 65536) in bf16 on 256-px RGB tiles, one GPU.

    python benchmarks/train_throughput.py --preset cpu
    python benchmarks/train_throughput.py --preset gpu --tiles 8192   # on a GPU machine

Results go to ``benchmarks/results/train_throughput_<preset>_<device>_<versions>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"tile_size": 64, "channels": 2, "tiles": 1536, "batch": 48, "config": "configs/quickstart.yaml",
            "overrides": {}},
    "gpu": {"tile_size": 256, "channels": 3, "tiles": 8192, "batch": 64, "config": "configs/methods/dino.yaml",
            "overrides": {"model.name": "vit_small_patch16_224", "train.use_gpu": True, "train.precision": "bf16",
                          "train.cpus_per_worker": 8.0}},
}


def make_store(url: str, n_tiles: int, size: int, channels: int, seed: int = 0):
    """Textured tiles (smooth noise plus speckle), written through the tile store writer."""
    from PIL import Image

    from sslray.data.store import TileStoreWriter

    rng = np.random.default_rng(seed)
    writer = TileStoreWriter(url, [f"c{i}" for i in range(channels)], np.uint8, size)
    block = 256
    for start in range(0, n_tiles, block):
        count = min(block, n_tiles - start)
        coarse = rng.integers(0, 255, (count, channels, size // 8, size // 8), dtype=np.uint8)
        tiles = np.stack([np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC)) for c in t])
                          for t in coarse])
        tiles[rng.random(tiles.shape) < 0.01] = 255
        rows = [{"source": "synthetic", "image_id": f"field{(start + i) // 4}",
                 "x": 0, "y": 0, "label": f"class{(start + i) % 4}"} for i in range(count)]
        writer.append(tiles, rows)
    return writer.close()


def bench_worker(config: dict[str, Any]) -> None:
    """Runs on the Ray Train worker: warm-up, then alternating pipeline and memory legs."""
    import ray.train
    import ray.train.torch

    from sslray.config import from_dict
    from sslray.data.shuffle import ShuffleBuffer
    from sslray.train.config import PretrainConfig
    from sslray.train.worker import build_step, epoch_batches
    from sslray.train.throughput import StepTimer

    cfg = from_dict(PretrainConfig, config["cfg"])
    plan = config["plan"]
    if cfg.train.torch_threads:
        torch.set_num_threads(cfg.train.torch_threads)
    torch.manual_seed(0)
    device = ray.train.torch.get_device()
    _, step_fn = build_step(cfg, plan)
    shard = ray.train.get_dataset_shard("train")
    batch = cfg.train.batch_size
    buffer = ShuffleBuffer(max(plan.shuffle_buffer_tiles, batch))
    in_memory = list(epoch_batches(shard, batch, buffer, (0, 0, 0), device))  # one epoch, kept on the device
    step = 0
    for images in in_memory[: config["warmup"]]:
        step_fn(images, step)
        step += 1
    _sync(device)

    pairs = []
    for repeat in range(config["repeats"]):
        timer = StepTimer()
        for epoch in range(config["epochs"]):
            timer.wait_starts()
            for images in epoch_batches(shard, batch, buffer, (0, 1 + repeat * config["epochs"] + epoch, 0), device):
                timer.data_ready()
                step_fn(images, step)
                step += 1
                timer.step_done(len(images))
                timer.wait_starts()
        pipeline = timer.take_window()
        start = time.perf_counter()
        for i in range(pipeline.steps):
            step_fn(in_memory[i % len(in_memory)], step)
            step += 1
        _sync(device)
        memory_rate = pipeline.images / (time.perf_counter() - start)
        pairs.append({"pipeline_images_per_s": pipeline.images_per_s, "memory_images_per_s": memory_rate,
                      "data_wait_fraction": pipeline.wait_fraction, "steps": pipeline.steps})
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{os.cpu_count()}core"
    # Train V2 keeps only checkpointed reports' metrics; the driver reads a file instead (one machine)
    Path(config["results_path"]).write_text(json.dumps({"pairs": pairs, "device": device_name}))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from sslray.config import load_config, to_dict
    from sslray.data.store import TileStore
    from sslray.train.config import PretrainConfig
    from sslray.data.datasource import read_tile_store
    from sslray.train.plan import TrainingPlan

    preset = PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        make_store(f"{tmp}/store", args.tiles or preset["tiles"], preset["tile_size"], preset["channels"])
        print(f"store written in {time.perf_counter() - started:.0f} s", flush=True)
        overrides = {**preset["overrides"], "store": f"{tmp}/store", "out": f"{tmp}/out",
                     "train.batch_size": args.batch or preset["batch"], "train.steps": 1_000_000}
        cfg = load_config(PretrainConfig, str(ROOT / preset["config"]), [f"{k}={v}" for k, v in overrides.items()])
        store = TileStore.open(cfg.store).select(cfg.data)
        plan = TrainingPlan.of(cfg, store)
        ray.init(num_cpus=args.cpus, object_store_memory=args.object_store_mb * 2**20, include_dashboard=False)
        trainer = TorchTrainer(
            bench_worker,
            train_loop_config={"cfg": to_dict(cfg), "plan": plan, "warmup": args.warmup, "repeats": args.repeats,
                               "epochs": args.epochs, "results_path": f"{tmp}/results.json"},
            scaling_config=ScalingConfig(num_workers=1, use_gpu=cfg.train.use_gpu,
                                         resources_per_worker={"CPU": cfg.train.cpus_per_worker,
                                                               **({"GPU": 1} if cfg.train.use_gpu else {})}),
            run_config=RunConfig(name="train-throughput", storage_path=f"{tmp}/ray"),
            datasets={"train": read_tile_store(store, shuffle=True)},
        )
        trainer.fit()
        ray.shutdown()
        results = json.loads(Path(f"{tmp}/results.json").read_text())
    return {**results, "cfg": cfg}


def write_results(args: argparse.Namespace, out: dict[str, Any]) -> None:
    import ray

    pairs, cfg = out["pairs"], out["cfg"]
    ratios = [p["pipeline_images_per_s"] / p["memory_images_per_s"] for p in pairs]
    median = {k: statistics.median(p[k] for p in pairs) for k in pairs[0]}
    ratio = statistics.median(ratios)
    device = args.device or out["device"].replace(" ", "-")
    name = f"train_throughput_{args.preset}_{device}_ray{ray.__version__}_torch{torch.__version__.split('+')[0]}.csv"
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["preset", "device", "model", "method", "batch", "precision", "repeat", "steps",
                         "pipeline_images_per_s", "memory_images_per_s", "ratio", "data_wait_fraction"])
        for i, (p, r) in enumerate(zip(pairs, ratios, strict=True)):
            writer.writerow([args.preset, out["device"], cfg.model.name, cfg.method_name, cfg.train.batch_size,
                             cfg.train.precision, i, p["steps"], round(p["pipeline_images_per_s"], 1),
                             round(p["memory_images_per_s"], 1), round(r, 3), round(p["data_wait_fraction"], 4)])
    print(f"| {args.preset}: {cfg.model.name} {cfg.method_name}, batch {cfg.train.batch_size}, {out['device']} "
          "| images/s | vs in-memory |\n|---|---|---|")
    print(f"| tensors already in memory (baseline) | {median['memory_images_per_s']:.1f} | 1.00x |")
    print(f"| Ray Data feed (tile store -> shard -> shuffle buffer) | {median['pipeline_images_per_s']:.1f} "
          f"| {ratio:.3f}x |")
    print(f"\npipeline leg waited for data {100 * median['data_wait_fraction']:.1f}% of step time; "
          f"{len(pairs)} repeats of {pairs[0]['steps']} steps; wrote {RESULTS / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--tiles", type=int, help="tiles in the store (default: the preset's)")
    parser.add_argument("--batch", type=int, help="batch per worker (default: the preset's)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per pipeline leg")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="steps before timing (compilation, allocator)")
    parser.add_argument("--cpus", type=int, default=None, help="logical CPUs for Ray (default: all)")
    parser.add_argument("--object-store-mb", type=int, default=1024)
    parser.add_argument("--device", default=None, help="name for the results file (default: the device's)")
    args = parser.parse_args()
    write_results(args, run(args))


if __name__ == "__main__":
    main()
