"""``sslray quickstart``: the whole pipeline on CPU; prints the typed summary it wrote."""

from __future__ import annotations

import argparse
import json

from sslray.cli.parsing import add_overrides


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder of images (class sub-folders, or --labels); default: synthetic cells")
    p.add_argument("--labels", help="CSV with columns path,label[,group]")
    p.add_argument("--bags", help="with --data: CSV bag_id,label[,patient_id] of the slides, for slide-level MIL")
    p.add_argument("--method", default="dino", help="SSL method (see `sslray methods`)")
    p.add_argument("--out", default="sslray-quickstart", help="output folder (default ./sslray-quickstart)")
    p.add_argument("--tile-size", type=int, help="tile edge (default 64 synthetic, 224 for --data)")
    p.add_argument("--steps", type=int, help="pretraining steps (default: scaled with the data)")
    add_overrides(p)


def run(args: argparse.Namespace) -> int:
    from sslray.quickstart import QuickstartConfig, run_quickstart
    from sslray.tracking import ui_hint

    summary = run_quickstart(QuickstartConfig(data=args.data, labels=args.labels, bags=args.bags, method=args.method,
                                              run_dir=args.out,
                                              tile_size=args.tile_size, steps=args.steps, overrides=args.overrides))
    print(json.dumps(summary.to_json(), indent=2))
    print(f"\n{summary.headline()}")
    print(f"see every run in MLflow:  {ui_hint(summary.tracking_uri)}")
    return 0
