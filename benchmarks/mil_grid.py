"""The MIL nested-CV grid on Ray Tune: wall time with 1 vs 2 trials at once, and memory vs table size.

One synthetic bag table (``--bags`` slides of ``--tiles`` tiles of width ``--dim``), one grid
(ABMIL, lr x weight decay, outer folds), run through ``sslray.evaluate.mil.run_bag_protocol``
exactly as ``sslray evaluate --protocol mil`` runs it:

- speed-up: wall time with ``max_parallel=1`` over wall time with ``max_parallel=2`` (same grid);
- memory: the peak proportional set size (PSS: shared pages split between the processes that
  map them) of the driver and every Ray process during the grid, minus the same sum before it,
  in multiples of the table's bytes, for a grid of N and of 2N trials. The bags go through the
  object store once, so the peak must not grow with the number of trials.

    python benchmarks/mil_grid.py --bags 60 --tiles 200 --dim 384
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = Path(__file__).resolve().parent / "results"


def write_bags(folder: Path, n_bags: int, tiles: int, dim: int, seed: int = 0) -> tuple[str, int]:
    """A plain parquet table of ``n_bags`` slides; positives hold a few shifted tiles. Returns (url, bytes)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_bags * tiles, dim)).astype(np.float32)
    slide = np.repeat(np.arange(n_bags), tiles)
    positive = slide % 2 == 1
    focus = positive & (np.tile(np.arange(tiles), n_bags) < max(1, tiles // 20))
    features[focus, 0] += 3.0
    table = pa.table({"slide_id": [f"s{s:04d}" for s in slide],
                      "label": np.where(positive, "tumour", "normal").tolist(),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), dim)})
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-0.parquet")
    return str(folder), features.nbytes


class PeakPSS:
    """Samples the summed PSS of this process and its descendants (Ray's raylet, workers, store)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        """Bytes: the Pss lines of /proc/PID/smaps_rollup over this process and its descendants."""
        total = 0
        for pid in descendants(os.getpid()):
            try:
                with open(f"/proc/{pid}/smaps_rollup") as handle:
                    total += sum(int(line.split()[1]) * 1024 for line in handle if line.startswith("Pss:"))
            except OSError:  # the process ended between the listing and the read
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)

    def __enter__(self) -> PeakPSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from the parent ids in /proc/PID/stat."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [root], [root]
    while todo:
        parent = todo.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def run_grid(url: str, run_dir: str, max_parallel: int, n_outer: int, epochs: int) -> tuple[float, int, int]:
    """(seconds, peak PSS above the pre-grid level, trials) of one nested-CV grid."""
    from sslray.evaluate.mil import MILConfig, run_bag_protocol

    cfg = MILConfig(embeddings=url, run_dir=run_dir, heads=["abmil"], lrs=[1e-3, 1e-4], weight_decays=[0.0, 1e-4],
                    epochs=epochs, n_outer=n_outer, n_inner=2, max_tiles=200, cpus_per_trial=1.0,
                    max_parallel=max_parallel)
    before = PeakPSS.now()
    started = time.perf_counter()
    with PeakPSS() as sampler:
        run_bag_protocol(cfg)
    return time.perf_counter() - started, sampler.peak - before, 4 * n_outer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bags", type=int, default=60)
    parser.add_argument("--tiles", type=int, default=200)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default=f"cpu-{os.cpu_count()}core")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url, nbytes = write_bags(Path(tmp) / "bags", args.bags, args.tiles, args.dim)
        run_grid(url, f"{tmp}/warm", 2, 2, 1)  # warm-up: worker start-up and imports are not the grid
        for name, parallel, outer in (("1 at once, 5 folds", 1, 5), ("2 at once, 5 folds", 2, 5),
                                      ("2 at once, 10 folds", 2, 10)):
            seconds, peak, trials = run_grid(url, f"{tmp}/{parallel}-{outer}", parallel, outer, args.epochs)
            rows.append({"grid": name, "trials": trials, "seconds": round(seconds, 1),
                         "peak_pss_mb": round(peak / 2**20, 1), "peak_over_table": round(peak / nbytes, 2)})
            print(rows[-1], flush=True)
    ray.shutdown()
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    growth = rows[2]["peak_pss_mb"] / max(rows[1]["peak_pss_mb"], 1e-9)
    summary = {"table_mb": round(nbytes / 2**20, 1), "speedup_2_vs_1": round(speedup, 2),
               "peak_2n_over_n_trials": round(growth, 2)}
    print(summary)
    RESULTS.mkdir(exist_ok=True)
    tag = f"{args.device}_python{platform.python_version()}"
    with open(RESULTS / f"mil_grid_{tag}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], *summary])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **summary})
    print("| grid | trials | seconds | peak PSS (MB) | peak / table |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['grid']} | {row['trials']} | {row['seconds']} | {row['peak_pss_mb']} | "
              f"{row['peak_over_table']} |")


if __name__ == "__main__":
    main()
