"""Tiles/s from the tile store into torch batches vs. the seeds' one-file-per-tile pattern.

Same tiles, same batch size, same number of loader processes, same machine, same run; each
path is timed as the median of three full passes after a warm-up pass (steady state, as in
every epoch after the first):

- baseline: one PNG per tile, decoded with Pillow in a torch ``DataLoader`` with shuffling
  (the pattern of the seed codebases);
- zarr: the tile store read shard by shard in the same process (no Ray, no shuffle), and the
  same tiles written in the format-1 layout (no per-chunk crc32c), passes interleaved, to price
  the checksum every read now verifies (the "chunk crc32c read cost" row: rate with / without);
- training path: the tile store through sslray's Ray Data datasource, whole blocks into the
  shuffle buffer that mixes shards into each batch (what training workers consume);
- ingest: MB/s of pixels written by ``sslray ingest`` from the PNG folder (Ray Data tiling).

With ``--s3`` (the default when moto is installed) the baseline and the training path are
repeated against a real S3-compatible server (moto's server mode on loopback): one GET per
tile file against one GET per shard.

Results go to ``benchmarks/results/ingest_stream_<device>.csv`` and a markdown table.

    python benchmarks/ingest_stream.py --tiles 3000 --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
NO_CRC = "format 1 (no chunk crc32c)"


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
    """One file per tile, local or ``s3://`` (a filesystem per loader process: s3fs is not fork-safe)."""

    def __init__(self, files: list[str]) -> None:
        self.files = files
        self._fs = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index]
        if path.startswith("s3://"):
            if self._fs is None:
                import s3fs

                self._fs = s3fs.S3FileSystem(skip_instance_cache=True)
            source = io.BytesIO(self._fs.cat_file(path))
        else:
            source = path
        with Image.open(source) as image:
            return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def tiles_per_s(make_batches, n_expected: int, passes: int = 3) -> float:
    """Median throughput over ``passes`` full passes after a warm-up pass (steady state, as in
    every epoch after the first; the median because a 2-core machine is noisy)."""
    for _ in make_batches():
        pass
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        seen = sum(len(batch) for batch in make_batches())
        rates.append(seen / (time.perf_counter() - start))
        assert seen == n_expected, f"saw {seen} tiles, expected {n_expected}"
    return float(np.median(rates))


def bench_baseline(files: list[str], batch: int, workers: int) -> float:
    loader = torch.utils.data.DataLoader(PngTiles(files), batch_size=batch, num_workers=workers, shuffle=True)
    return tiles_per_s(lambda: iter(loader), len(files))


def zarr_batches(store, batch: int):
    """The store read shard by shard in this process (no Ray, no shuffle)."""
    array = store.tiles()
    shard = store.info.shard_tiles

    def batches():
        for start in range(0, len(store), shard):
            block = torch.from_numpy(np.asarray(array[start : start + shard]))
            yield from block.split(batch)

    return batches


def format_1_copy(store, dest: Path):
    """The same tiles and manifest written without the per-chunk crc32c (stores before format 2)."""
    from sslray.data.store import TileStoreWriter

    info = store.info
    writer = TileStoreWriter(str(dest), info.channels, np.dtype(info.dtype), info.tile_size, chunk_checksums=False)
    rows = [{k: v for k, v in row.items() if k != "tile_id"} for row in store.manifest_table.to_pylist()]
    for start in range(0, len(store), info.shard_tiles):
        stop = min(start + info.shard_tiles, len(store))
        writer.append(store.read(start, stop), rows[start:stop])
    return writer.close()


def bench_checksum_cost(store, old, batch: int, make=None, rounds: int = 7) -> tuple[float, float]:
    """Median read rate (``make``: zarr_batches or training_batches) with and without chunk
    checksums, one pass of each in turn, so load from anything else on a shared 2-core machine
    falls on both alike."""
    make = make or zarr_batches
    batches = {"crc": make(store, batch), "old": make(old, batch)}
    rates = {"crc": [], "old": []}
    for _ in range(rounds):
        for key, make_batches in batches.items():
            rates[key].append(tiles_per_s(make_batches, len(store), passes=1))
    return float(np.median(rates["crc"])), float(np.median(rates["old"]))


def bench_training_path(store, batch: int) -> float:
    return tiles_per_s(training_batches(store, batch), len(store))


def training_batches(store, batch: int):
    """What ``train_loop_per_worker`` does: whole blocks -> shuffle buffer -> torch batches."""
    from sslray.data.datasource import read_tile_store
    from sslray.data.shuffle import ShuffleBuffer, shuffled_batches

    ds = read_tile_store(store, shuffle=True)
    buffer = ShuffleBuffer(max(2 * batch, (512 << 20) // (3 * store.info.tile_size**2)))  # one per worker

    def batches():
        blocks = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=4)
        for b in shuffled_batches(({"image": b["image"]} for b in blocks), batch, buffer, drop_last=False):
            yield torch.from_numpy(b["image"])

    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=3000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="loader processes for the baseline; Ray gets as many CPUs")
    parser.add_argument("--s3", action=argparse.BooleanOptionalAction, default=_has_moto(),
                        help="also measure against a moto S3 server on loopback")
    parser.add_argument("--device", default=platform.node() or "cpu")
    args = parser.parse_args()

    import ray

    with contextlib.ExitStack() as stack:
        bucket = stack.enter_context(moto_server()) if args.s3 else None  # before Ray: workers inherit its env
        ray.init(num_cpus=args.workers, object_store_memory=512 * 1024**2, include_dashboard=False,
                 log_to_driver=False)
        rows, ingest_s = run_all(args, bucket)
        ray.shutdown()
    mb = args.tiles * 3 * args.size**2 / 1e6
    write_results(args, rows, mb / ingest_s)


def run_all(args, bucket: str | None) -> tuple[list[tuple[str, float]], float]:
    from sslray.data.ingest import IngestConfig, ingest_folder

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiles(Path(tmp) / "png", args.tiles, args.size)
        files = sorted(str(p) for p in folder.rglob("*.png"))
        start = time.perf_counter()
        store = ingest_folder(IngestConfig(src=str(folder), out=str(Path(tmp) / "store"), tile_size=args.size))
        ingest_s = time.perf_counter() - start
        old = format_1_copy(store, Path(tmp) / "store_v1")
        zarr_crc, zarr_old = bench_checksum_cost(store, old, args.batch)
        train_crc, train_old = bench_checksum_cost(store, old, args.batch, training_batches)
        rows = [
            ("local: PNG per tile + DataLoader (baseline)", bench_baseline(files, args.batch, args.workers)),
            ("local: tile store, zarr in one process", zarr_crc),
            (f"local: tile store, zarr in one process, {NO_CRC}", zarr_old),
            ("local: tile store, Ray Data training path", train_crc),
            (f"local: tile store, Ray Data training path, {NO_CRC}", train_old),
        ]
        if bucket:
            rows += bench_s3(bucket, folder, files, store, args)
    return rows, ingest_s


def bench_s3(bucket: str, folder: Path, files: list[str], store, args) -> list[tuple[str, float]]:
    """The same two paths with every byte coming from an S3 server on loopback."""
    import s3fs

    from sslray.data.store import TileStore

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.put(str(folder), f"{bucket}/png", recursive=True)
    fs.put(store.url, f"{bucket}/store", recursive=True)
    remote_files = [f"s3://{bucket}/png/{Path(f).relative_to(folder).as_posix()}" for f in files]
    remote = TileStore.open(f"s3://{bucket}/store")
    return [
        ("S3: PNG per tile + DataLoader (baseline)", bench_baseline(remote_files, args.batch, args.workers)),
        ("S3: tile store, Ray Data training path", bench_training_path(remote, args.batch)),
    ]


@contextlib.contextmanager
def moto_server():
    """moto's S3 server on a free loopback port, with the standard AWS variables pointing at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        import boto3

        for _ in range(100):
            try:
                boto3.client("s3").create_bucket(Bucket="bench")
                break
            except Exception:
                time.sleep(0.1)
        yield "bench"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _has_moto() -> bool:
    import importlib.util

    return importlib.util.find_spec("moto") is not None


def write_results(args, rows: list[tuple[str, float]], ingest_mb_s: float) -> None:
    import ray

    baselines = {label.split(":")[0]: rate for label, rate in rows if "baseline" in label}
    rates = dict(rows)
    crc_ratios = {label.split(": ", 1)[1]: rate / rates[f"{label}, {NO_CRC}"]
                  for label, rate in rows if f"{label}, {NO_CRC}" in rates}
    ratio = {label: rate / baselines[label.split(":")[0]] for label, rate in rows}
    RESULTS.mkdir(exist_ok=True)
    name = f"ingest_stream_{args.device}_ray{ray.__version__}_torch{torch.__version__.split('+')[0]}.csv"
    with open(RESULTS / name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "tiles_per_s", "ratio_vs_baseline", "tiles", "tile_size", "batch", "workers"])
        for label, rate in rows:
            writer.writerow([label, round(rate, 1), round(ratio[label], 2), args.tiles, args.size, args.batch,
                             args.workers])
        writer.writerow(["ingest (MB/s of pixels)", round(ingest_mb_s, 1), "", args.tiles, args.size, "", args.workers])
        for label, ratio_crc in crc_ratios.items():
            writer.writerow([f"chunk crc32c: {label}, rate with / without", round(ratio_crc, 3), "", args.tiles,
                             args.size, args.batch, args.workers])
    print(f"| path ({args.tiles} x {args.size}-px RGB tiles, batch {args.batch}, {args.workers} workers) "
          "| tiles/s | vs baseline |\n|---|---|---|")
    for label, rate in rows:
        print(f"| {label} | {rate:.0f} | {ratio[label]:.2f}x |")
    print(f"| ingest from PNG folder | {ingest_mb_s:.1f} MB/s | |")
    for label, ratio_crc in crc_ratios.items():
        print(f"chunk crc32c, {label}: rate with / without = {ratio_crc:.3f} ({(1 - ratio_crc) * 100:.1f}% cost)")
    print(f"\nwrote {RESULTS / name}")


if __name__ == "__main__":
    main()
