"""The GPU suite: pretraining, embedding and MIL throughput on one accelerator, in plain torch.

Meant for a lent GPU machine that has torch and timm but no Ray or MLflow (``gpu_suite.sh``
installs zarr from carried wheels first). It builds its own synthetic tile store, then measures:

(a) pretraining: ViT-S/16 DINO multi-crop (2 x 224 + 6 x 96), bf16, images/s from batches
    already on the GPU and from a DataLoader reading the tile store, and the share of step time
    spent waiting for the next batch;
(b) embedding: ViT-B/16 bf16 tiles/s end to end (store read -> encode -> host) and model-only
    (tiles already on the GPU), and their ratio;
(c) the MIL grid: seconds per trial for a few heads x learning rates, trained as
    ``sslray.evaluate.mil_train`` trains them.

Everything timed is sslray's own torch code (see ``gpu_parts``); Ray is not timed: its Data
feed, Train wrapper and Tune scheduling are left out, and those costs are measured on CPU by
``ingest_stream.py``, ``train_throughput.py`` and ``mil_grid.py``.

    bash benchmarks/gpu_suite.sh                    # on the GPU machine, under 8 minutes
    python benchmarks/gpu_suite.py --device cpu --quick   # here, seconds: the same code at toy sizes

Writes ``benchmarks/results/gpu_suite_<device>.csv`` and ``.md`` (``--out`` for elsewhere).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from gpu_feed import device_name
from gpu_parts import EmbedSizes, MILSizes, PretrainSizes, embed, mil, pretrain
from train_throughput import make_store

RESULTS = Path(__file__).resolve().parent / "results"
SCOPE = ("Pure torch: sslray's SSLStep, encode and mil_train on one device, the tile store read by a torch "
         "DataLoader (sslray's TileStore.read and ShuffleBuffer). Ray is not timed: no Ray Data, Train or Tune.")


def full_sizes(workers: int) -> dict[str, Any]:
    """One H100/H200, about 4 minutes of measurement."""
    return {
        "store": {"tiles": 4096, "tile_size": 224, "channels": 3},
        "pretrain": PretrainSizes("configs/methods/dino.yaml", {"model.name": "vit_small_patch16_224",
                                                                "method.views.n_local": 6}, batch=64, steps=40,
                                  warmup=10, repeats=2, resident_batches=8, workers=workers),
        "embed": EmbedSizes("vit_base_patch16_224", {}, batch=256, repeats=3, workers=workers),
        "mil": MILSizes(bags=120, tiles=(200, 800), dim=768, heads=("abmil", "chowder", "dsmil", "transmil"),
                        lrs=(1e-3, 1e-4), epochs=20, max_tiles=512, n_outer=5, n_inner=3),
    }


def quick_sizes(workers: int) -> dict[str, Any]:
    """The same code at toy sizes: a few seconds on a CPU, for the test that keeps the suite working."""
    tiny = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    return {
        "store": {"tiles": 64, "tile_size": 32, "channels": 3},
        "pretrain": PretrainSizes("configs/quickstart.yaml", {
            "model.kwargs": "{patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}", "method.out_dim": 64,
            "method.hidden_dim": 64, "method.bottleneck_dim": 32, "method.views.global_size": 32,
            "method.views.local_size": 16}, batch=8, steps=3, warmup=1, repeats=1, resident_batches=2,
            workers=workers),
        "embed": EmbedSizes("vit_tiny_patch16_224", tiny, batch=16, repeats=1, workers=workers),
        "mil": MILSizes(bags=16, tiles=(8, 16), dim=8, heads=("abmil", "mean_pool"), lrs=(1e-3,), epochs=2,
                        max_tiles=8, n_outer=2, n_inner=2),
    }


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_suite: --device cuda but torch sees no GPU (use --device cpu --quick for a CPU check)")
    return torch.device(name)


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, str]]:
    device = pick_device(args.device)
    workers = args.workers if args.workers is not None else (0 if args.quick else min(8, (os.cpu_count() or 2) - 2))
    sizes = (quick_sizes if args.quick else full_sizes)(workers)
    rows, seconds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        store = sizes["store"]
        make_store(f"{tmp}/store", store["tiles"], store["tile_size"], store["channels"])
        seconds["store"] = time.perf_counter() - started
        for name, part in (("pretrain", lambda: pretrain(f"{tmp}/store", sizes["pretrain"],
                                                         "bf16" if device.type == "cuda" else "fp32", device)),
                           ("embed", lambda: embed(f"{tmp}/store", sizes["embed"], device)),
                           ("mil", lambda: mil(sizes["mil"], device))):
            started = time.perf_counter()
            rows += part()
            seconds[name] = time.perf_counter() - started
            print(f"{name}: {seconds[name]:.1f} s", flush=True)
    about = {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
             "sizes": "quick" if args.quick else "full", "loader_workers": str(workers),
             "wall_s": ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())}
    return rows, about


def markdown(rows: list[dict[str, Any]], about: dict[str, str]) -> str:
    lines = [f"# GPU suite on {about['device']}", "", SCOPE, "",
             f"torch {about['torch']}, Python {about['python']}, {about['sizes']} sizes, "
             f"{about['loader_workers']} DataLoader workers; wall time (s): {about['wall_s']}.", ""]
    for part in ("pretrain", "embed", "mil"):
        lines += ["| part | measure | value | unit | detail |", "|---|---|---|---|---|"] if part == "pretrain" else []
        lines += [f"| {r['part']} | {r['measure']} | {r['value']:g} | {r['unit']} | {r['detail']} |"
                  for r in rows if r["part"] == part]
    return "\n".join(lines) + "\n"


def write(rows: list[dict[str, Any]], about: dict[str, str], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu_suite_{about['device']}{'_quick' if about['sizes'] == 'quick' else ''}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], *about])
        writer.writeheader()
        writer.writerows({**r, **about} for r in rows)
    path.with_suffix(".md").write_text(markdown(rows, about))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--quick", action="store_true", help="toy sizes: seconds on a CPU (checks, not figures)")
    parser.add_argument("--workers", type=int, help="DataLoader processes reading the store "
                                                    "(default: min(8, CPUs - 2); --quick: 0, in this process)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the CSV and Markdown results")
    args = parser.parse_args(argv)
    print(SCOPE, flush=True)
    rows, about = run(args)
    path = write(rows, about, args.out)
    print(markdown(rows, about))
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
