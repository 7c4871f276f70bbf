"""What batch embedding costs end to end: tiles/s of ``run_embed`` vs. the encoder alone.

One run, one machine, one checkpoint (an untrained timm model saved in sslray's checkpoint
format) and the same tiles on every leg:

- model-only (the baseline): ``encode`` on tiles already in memory on the device, batch after
  batch (the median of ``--repeats`` passes after a warm-up batch);
- store: ``run_embed(EmbedConfig(store=...))``: the tile store's shards through Ray Data read
  tasks into the pool of ``Embedder`` actors, committed as parquet partitions;
- slides: ``run_embed(EmbedConfig(slides=..., tiling=...))``: generated pyramidal TIFF slides
  opened with tiffslide and tiled inside Ray Data read tasks, into the same actors.

The store is ingested from those slides (same grid, same resolution), so all three legs embed
the very same tiles. Ray is started first and timed on its own, so each pipeline leg is given
both without Ray start-up (``run_embed``'s wall time: plan, actors starting and loading the
checkpoint, reading, encoding, writing, publishing) and with it (what a fresh process sees).
The ratios pipeline / model-only say what the pipeline costs (goal on a GPU: at least 0.9).

    python benchmarks/embed_throughput.py                      # CPU defaults, a few minutes
    python benchmarks/embed_throughput.py --model vit_base_patch16_224 --tiles 8192 --batch-size 256

Results go to ``benchmarks/results/embed_throughput_<device>_<versions>.csv`` and a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
SCAN_MPP = 0.5  # level-0 resolution of the generated slides (a 20x scan)
TARGET_MPP = 1.0  # tiles are cut at 1 mpp, from the pyramid's 2x level
GLASS = 245
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def save_untrained(url: str, model: str, image_size: int) -> str:
    """An untrained timm model in the checkpoint format (RGB, ImageNet normalisation)."""
    from sslray.artifacts.checkpoint import save_checkpoint
    from sslray.models.backbones import BackboneConfig, create_backbone, feature_dim

    torch.manual_seed(0)
    encoder = create_backbone(BackboneConfig(model), 3)
    save_checkpoint(url, encoder, {"model": {"name": model}, "in_chans": 3, "image_size": image_size,
                                   "scale": 255.0, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                                   "method": "random_init", "embed_dim": feature_dim(encoder)})
    return url


def make_slides(folder: Path, n_tiles: int, n_slides: int, tile_size: int, seed: int = 0) -> Path:
    """``n_slides`` pyramidal JPEG TIFFs holding ``n_tiles`` tissue tiles in all (at TARGET_MPP).

    Each slide is a grid of tile cells inside one cell of glass all round; the first ``count``
    cells are textured pink "tissue", the rest glass, so the tissue detector keeps exactly
    ``n_tiles`` tiles and the grid needs no guessing.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cell = round(tile_size * TARGET_MPP / SCAN_MPP)  # level-0 pixels per tile
    per_slide = [n_tiles // n_slides + (i < n_tiles % n_slides) for i in range(n_slides)]
    cols = max(1, int(np.ceil(np.sqrt(max(per_slide)))))
    for index, count in enumerate(per_slide):
        rows = max(1, int(np.ceil(count / cols)))
        image = np.full(((rows + 2) * cell, (cols + 2) * cell, 3), GLASS, np.uint8)
        for k in range(count):
            y, x = (k // cols + 1) * cell, (k % cols + 1) * cell
            image[y : y + cell, x : x + cell] = _tissue(rng, cell)
        _write_pyramid(folder / f"slide{index:02d}.tif", image)
    return folder


def _tissue(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth stain-coloured noise with speckle: texture JPEG cannot compress to nothing."""
    from PIL import Image

    coarse = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
    noise = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC)).astype(np.int16) - 128
    tile = np.array([180, 90, 150], np.int16) + noise // 3
    speckle = rng.random((size, size)) < 0.01
    tile[speckle] = 60
    return np.clip(tile, 0, 255).astype(np.uint8)


def _write_pyramid(path: Path, image: np.ndarray, levels: int = 3) -> None:
    """Level 0 plus 2x and 4x reductions as SubIFDs, 256-px JPEG tiles, as scanners write them."""
    import tifffile

    options = {"tile": (256, 256), "photometric": "rgb", "compression": "jpeg"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(image, subifds=levels - 1, **options)
        level = image
        for _ in range(levels - 1):
            h, w = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
            level = level[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
            tif.write(level, subfiletype=1, **options)


def tiling(tile_size: int, **more):
    """How both the ingest and the slides leg cut the slides: TARGET_MPP tiles of the generated scans."""
    from sslray.data.ingest import IngestConfig

    return IngestConfig(tile_size=tile_size, mpp=TARGET_MPP, mpp_override=SCAN_MPP, **more)


def model_only(checkpoint: str, tiles: np.ndarray, batch_size: int, repeats: int, threads: int | None = None) -> float:
    """Median tiles/s of ``encode`` over tiles already on the device (what the actors' model costs).

    ``threads``: torch's CPU threads for this leg only (Ray gives an actor as many as its CPUs).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _encode_rate(checkpoint, tiles, batch_size, repeats)
    finally:
        torch.set_num_threads(previous)


def _encode_rate(checkpoint: str, tiles: np.ndarray, batch_size: int, repeats: int) -> float:
    from sslray.artifacts.checkpoint import load_encoder
    from sslray.infer.encoder import encode

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder, meta = load_encoder(checkpoint)
    encoder.to(device)
    x = torch.from_numpy(tiles).to(device)
    batches = x.split(batch_size)
    rates = []
    with torch.inference_mode():
        encode(encoder, batches[0], meta, device)  # warm-up: allocator, kernels
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches:
                encode(encoder, batch, meta, device)
            _sync(device)
            rates.append(len(x) / (time.perf_counter() - start))
    del encoder, x, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the actors need the GPU next
    return statistics.median(rates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quiet_ray_data() -> None:
    """The table, not Ray Data's progress lines (logged every few seconds when not on a terminal)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False


def embed_leg(make_cfg, repeats: int) -> tuple[float, int]:
    """Median wall seconds of ``run_embed`` (Ray already up) and the rows it wrote."""
    from sslray.infer.embed import run_embed

    seconds, rows = [], set()
    for repeat in range(repeats):
        cfg = make_cfg(repeat)
        start = time.perf_counter()
        out = run_embed(cfg)
        seconds.append(time.perf_counter() - start)
        rows.add(_table_rows(out))
    if len(rows) != 1:
        raise RuntimeError(f"repeats wrote different row counts: {sorted(rows)}")
    return statistics.median(seconds), rows.pop()


def _table_rows(out: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in Path(out).glob("part-*.parquet"))


def run(args: argparse.Namespace) -> dict:
    from sslray.data.ingest import ingest_folder
    from sslray.infer.embed import EmbedConfig
    from sslray.runtime import ensure_ray

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        checkpoint = save_untrained(f"{tmp}/checkpoint", args.model, args.image_size)
        slides = make_slides(Path(tmp) / "slides", args.tiles, args.slides, args.tile_size)
        store = ingest_folder(tiling(args.tile_size, src=str(slides), out=f"{tmp}/store", workers=0))
        if len(store) != args.tiles:
            raise RuntimeError(f"the slides gave {len(store)} tiles, expected {args.tiles}")
        print(f"checkpoint, {args.slides} slides and the store ({len(store)} tiles) made in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        tiles = store.read(0, len(store))
        baseline = model_only(checkpoint, tiles, args.batch_size, args.repeats)
        print(f"model-only: {baseline:.1f} tiles/s", flush=True)
        actor_threads = None if torch.cuda.is_available() else max(1, int(args.cpus_per_actor))
        if actor_threads is not None and actor_threads != torch.get_num_threads():
            actor_rate = model_only(checkpoint, tiles, args.batch_size, args.repeats, actor_threads)
            print(f"model-only, {actor_threads} thread(s) as an actor gets: {actor_rate:.1f} tiles/s", flush=True)
        else:
            actor_rate, actor_threads = None, None

        started = time.perf_counter()
        ensure_ray(num_cpus=args.ray_cpus, object_store_memory=args.object_store_mb * 2**20)
        ray_s = time.perf_counter() - started
        _quiet_ray_data()
        import mlflow  # noqa: F401  (imported once per process, like Ray: not one leg's cost)
        common = {"checkpoint": checkpoint, "batch_size": args.batch_size, "num_actors": args.actors,
                  "cpus_per_actor": args.cpus_per_actor, "progress_every_s": 3600.0}
        store_s, store_rows = embed_leg(  # a fresh MLflow run dir per job, as a first job would have
            lambda i: EmbedConfig(store=store.url, out=f"{tmp}/emb_store{i}", run_dir=f"{tmp}/runs_store{i}",
                                  **common), args.repeats_embed)
        print(f"store -> actors -> parquet: {store_rows / store_s:.1f} tiles/s", flush=True)
        slides_s, slides_rows = embed_leg(
            lambda i: EmbedConfig(slides=str(slides), tiling=tiling(args.tile_size), out=f"{tmp}/emb_slides{i}",
                                  run_dir=f"{tmp}/runs_slides{i}", **common), args.repeats_embed)
        print(f"slides -> actors -> parquet: {slides_rows / slides_s:.1f} tiles/s", flush=True)
    return {"baseline": baseline, "actor_model": (actor_threads, actor_rate), "ray_s": ray_s, "legs": [
        ("store -> Ray Data actors -> parquet", store_rows, store_s),
        ("slides (pyramidal TIFF) -> Ray Data actors -> parquet", slides_rows, slides_s)]}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-")
    return f"cpu-{os.cpu_count()}core"


def write_results(args: argparse.Namespace, out: dict) -> None:
    import ray

    device = args.device or device_name()
    baseline = out["baseline"]
    rows = [("model-only: encode on tiles in memory (baseline)", args.tiles, args.tiles / baseline, baseline, "")]
    threads, actor_rate = out["actor_model"]
    if actor_rate:
        rows.append((f"model-only, {threads} torch thread(s) as one actor gets", args.tiles, args.tiles / actor_rate,
                     actor_rate, ""))
    model_rate = actor_rate or baseline  # what the actor's encoder alone would take for these tiles
    for label, n, seconds in out["legs"]:
        with_ray = n / (seconds + out["ray_s"])
        rows.append((label, n, seconds, n / seconds, with_ray))
        print(f"{label}: {seconds - n / model_rate:.1f} s beyond the actor's model time (start-up, reading, "
              "writing, publishing)")
    name = f"embed_throughput_{device}_ray{ray.__version__}_torch{torch.__version__.split('+')[0]}.csv"
    results = Path(args.out)
    results.mkdir(parents=True, exist_ok=True)
    with open(results / name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "tiles", "seconds", "tiles_per_s", "ratio_vs_model_only",
                         "tiles_per_s_incl_ray_start", "ratio_incl_ray_start", "model", "batch_size", "actors",
                         "cpus_per_actor", "ray_start_s", "device"])
        for label, n, seconds, rate, with_ray in rows:
            writer.writerow([label, n, round(seconds, 2), round(rate, 2), round(rate / baseline, 4),
                             round(with_ray, 2) if with_ray else "", round(with_ray / baseline, 4) if with_ray else "",
                             args.model, args.batch_size, args.actors, args.cpus_per_actor, round(out["ray_s"], 2),
                             device])
    print(f"\n| {args.model}, {args.tiles} x {args.tile_size}-px RGB tiles, batch {args.batch_size}, {args.actors} "
          f"actor(s) x {args.cpus_per_actor} CPU, {device} | tiles/s | vs model-only | incl. Ray start-up |")
    print("|---|---|---|---|")
    for label, _, _, rate, with_ray in rows:
        extra = f"{with_ray:.1f} ({with_ray / baseline:.2f}x)" if with_ray else ""
        print(f"| {label} | {rate:.1f} | {rate / baseline:.2f}x | {extra} |")
    print(f"\nRay start-up {out['ray_s']:.1f} s; wrote {results / name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small_patch16_224", help="timm model name (untrained)")
    parser.add_argument("--image-size", type=int, default=224, help="the encoder's input size")
    parser.add_argument("--tile-size", type=int, default=224)
    parser.add_argument("--tiles", type=int, default=192, help="tiles in all (the store and the slides)")
    parser.add_argument("--slides", type=int, default=4, help="slides the tiles are spread over")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--actors", type=int, default=1, help="Embedder actors (a GPU each on a GPU machine)")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0, help="also the actor's torch threads (Ray)")
    parser.add_argument("--repeats", type=int, default=2, help="model-only passes (median)")
    parser.add_argument("--repeats-embed", type=int, default=1, help="run_embed runs per pipeline leg (median)")
    parser.add_argument("--ray-cpus", type=int, default=None, help="logical CPUs for Ray (default: all)")
    parser.add_argument("--object-store-mb", type=int, default=1024)
    parser.add_argument("--device", default=None, help="name for the results file (default: the device's)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the CSV")
    args = parser.parse_args(argv)
    if args.tiles < args.slides:
        parser.error("--tiles must be at least --slides")
    logging.basicConfig(level=logging.WARNING)
    write_results(args, run(args))


if __name__ == "__main__":
    main()
