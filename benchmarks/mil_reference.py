"""The classic MIL benchmarks (Musk1, Elephant) through ``sslray evaluate --protocol mil``.

Each ``<name>.npz`` of the real test data (``$SSLRAY_TEST_DATA/mil``) becomes a plain parquet
table: one row per instance, ``slide_id`` = its bag, ``label`` = the bag's label, instances
z-scored per feature (their raw scales span orders of magnitude). Then the full protocol of
``configs/evaluate/mil.yaml`` runs on it (5 x 5 nested CV, lr x weight decay, every head) and the
outer-fold accuracy and AUC per head are printed as the README's table. The published figures
(Ilse et al. 2018, 10-fold x 5): ABMIL about 0.89 accuracy on Musk1 and 0.87 on Elephant.

    python benchmarks/mil_reference.py --out /tmp/mil-reference [--heads abmil mean_pool]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def benchmark_table(npz: Path, out: Path) -> str:
    data = np.load(npz)
    x = data["instances"].astype(np.float64)
    x = ((x - x.mean(0)) / (x.std(0) + 1e-6)).astype(np.float32)
    bag, label = data["bag_id"], data["bag_label"]
    table = pa.table({"slide_id": [f"bag{b:03d}" for b in bag], "label": [str(int(label[b])) for b in bag],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])})
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "part-0.parquet")
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="mil-reference")
    parser.add_argument("--data", default=os.environ.get("SSLRAY_TEST_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--heads", nargs="*", default=None, help="default: every head of configs/evaluate/mil.yaml")
    parser.add_argument("--datasets", nargs="*", default=["Musk1", "Elephant"])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the protocol config")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    rows = []
    for name in args.datasets:
        table = benchmark_table(Path(args.data) / "mil" / f"{name}.npz", out / "tables" / name)
        extra = [f"heads=[{','.join(args.heads)}]"] if args.heads else []
        command = [sys.executable, "-m", "sslray.cli", "evaluate", "--protocol", "mil", "--embeddings", table,
                   "--config", str(ROOT / "configs" / "evaluate" / "mil.yaml"), f"run_dir={out}", *extra,
                   *args.overrides]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        doc = json.loads((out / "results" / "mil" / name / "results.json").read_text())
        for head, model in doc["models"].items():
            rows.append((name, head, model["accuracy"], model["auc"]))
    print("| data | head | accuracy | AUC |\n|---|---|---|---|")
    for name, head, acc, auc in rows:
        print(f"| {name} | {head} | {acc['mean']:.3f} ± {acc['sd']:.3f} | {auc['mean']:.3f} ± {auc['sd']:.3f} |")


if __name__ == "__main__":
    main()
