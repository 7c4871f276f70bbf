"""Tiles/s from the tile store into torch batches vs. the seeds' one-file-per-tile pattern.

Same tiles, same batch size, same number of loader processes, same machine, same run; each
path is timed on its second full pass (steady state, as in every epoch after the first):

- baseline: one PNG per tile, decoded with Pillow in a torch ``DataLoader`` (the pattern of
  the seed codebases);
- zarr: the tile store read shard by shard in the same process (no Ray);
- ray-data: the tile store through sslray's Ray Data datasource and ``iter_torch_batches``
  (what training workers consume);
- ingest: MB/s of pixels written by ``sslray ingest`` from the PNG folder.

Results go to ``benchmarks/results/ingest_stream_<device>.csv`` and a markdown table.

    python benchmarks/ingest_stream.py --tiles 3000 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"


def make_tiles(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """Textured RGB tiles (smooth noise, so PNG compresses like tissue, not like white noise)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (n // 50 + 1, size // 8, size // 8, 3), dtype=np.uint8)
    for i in range(n):
        small = Image.fromarray(base[i // 50])
        tile = np.asarray(small.resize((size, size), Image.BICUBIC)).copy()
        tile[rng.integers(0, size, 200), rng.integers(0, size, 200)] = rng.integers(0, 255, (200, 3))
        label = folder / f"class{i % 4}"
        label.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tile).save(label / f"tile{i:05d}.png")
    return folder


class PngTiles(torch.utils.data.Dataset):
    def __init__(self, folder: Path) -> None:
        self.files = sorted(folder.rglob("*.png"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def tiles_per_s(make_batches, n_expected: int) -> float:
    """Throughput of the second pass: steady state, as in every epoch after the first."""
    for _ in make_batches():
        pass
    batches = make_batches()
    start = time.perf_counter()
    seen = 0
    for batch in batches:
        seen += len(batch)
    elapsed = time.perf_counter() - start
    assert seen == n_expected, f"saw {seen} tiles, expected {n_expected}"
    return seen / elapsed


def bench_baseline(folder: Path, batch: int, workers: int) -> float:
    loader = torch.utils.data.DataLoader(PngTiles(folder), batch_size=batch, num_workers=workers, shuffle=True)
    return tiles_per_s(lambda: iter(loader), len(loader.dataset))


def bench_zarr(store, batch: int) -> float:
    array = store.tiles()
    shard = store.info.shard_tiles

    def batches():
        for start in range(0, len(store), shard):
            block = torch.from_numpy(np.asarray(array[start : start + shard]))
            yield from block.split(batch)

    return tiles_per_s(batches, len(store))


def bench_ray(store, batch: int) -> float:
    ds = store.to_ray_dataset(shuffle=True)
    return tiles_per_s(lambda: (b["image"] for b in ds.iter_torch_batches(batch_size=batch)), len(store))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=3000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="loader processes for the baseline; Ray gets as many CPUs")
    parser.add_argument("--device", default=platform.node() or "cpu")
    args = parser.parse_args()

    import ray

    from sslray.data.ingest import IngestConfig, ingest_folder

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiles(Path(tmp) / "png", args.tiles, args.size)
        start = time.perf_counter()
        store = ingest_folder(IngestConfig(src=str(folder), dest=str(Path(tmp) / "store"), tile_size=args.size))
        ingest_s = time.perf_counter() - start
        ray.init(num_cpus=args.workers, object_store_memory=512 * 1024**2, include_dashboard=False,
                 log_to_driver=False)
        rows = [
            ("baseline: PNG per tile + DataLoader", bench_baseline(folder, args.batch, args.workers)),
            ("tile store: zarr, one process", bench_zarr(store, args.batch)),
            ("tile store: Ray Data iter_torch_batches", bench_ray(store, args.batch)),
        ]
        ray.shutdown()
    mb = args.tiles * 3 * args.size**2 / 1e6
    write_results(args, rows, mb / ingest_s)


def write_results(args, rows: list[tuple[str, float]], ingest_mb_s: float) -> None:
    import ray

    baseline = rows[0][1]
    RESULTS.mkdir(exist_ok=True)
    name = f"ingest_stream_{args.device}_ray{ray.__version__}_torch{torch.__version__.split('+')[0]}.csv"
    with open(RESULTS / name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "tiles_per_s", "ratio_vs_baseline", "tiles", "tile_size", "batch", "workers"])
        for label, rate in rows:
            writer.writerow([label, round(rate, 1), round(rate / baseline, 2), args.tiles, args.size, args.batch,
                             args.workers])
        writer.writerow(["ingest (MB/s of pixels)", round(ingest_mb_s, 1), "", args.tiles, args.size, "", 1])
    print(f"| path ({args.tiles} x {args.size}-px RGB tiles, batch {args.batch}, {args.workers} workers) "
          "| tiles/s | vs baseline |\n|---|---|---|")
    for label, rate in rows:
        print(f"| {label} | {rate:.0f} | {rate / baseline:.2f}x |")
    print(f"| ingest from PNG folder | {ingest_mb_s:.1f} MB/s | |")
    print(f"\nwrote {RESULTS / name}")


if __name__ == "__main__":
    main()
