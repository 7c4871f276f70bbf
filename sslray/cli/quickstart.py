"""``sslray quickstart``: the whole pipeline on CPU; prints the typed summary it wrote."""

from __future__ import annotations

import argparse
import json

from sslray.cli.parsing import add_overrides


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder of images (class sub-folders, or --labels); default: synthetic cells")
    p.add_argument("--labels", help="CSV with columns path,label[,group]")
    p.add_argument("--bags", help="with --data: CSV bag_id,label[,patient_id] of the slides, for slide-level MIL")
    p.add_argument("--profiling", action="store_true",
                   help="profile a synthetic Cell Painting screen instead (SSL vs random init on NSB accuracy and mAP)")
    p.add_argument("--method", help="SSL method (see `sslray methods`; default: DINO, with --profiling the method of "
                                    "configs/quickstart/profiling/recipe.yaml)")
    p.add_argument("--out", help="output folder (default ./sslray-quickstart, ./sslray-quickstart-profiling)")
    p.add_argument("--tile-size", type=int, help="tile edge (default 64 synthetic, 224 for --data)")
    p.add_argument("--steps", type=int, help="pretraining steps (default: scaled with the data)")
    add_overrides(p)


def run(args: argparse.Namespace) -> int:
    from sslray.quickstart import QuickstartConfig, run_quickstart

    given = {k: v for k, v in (("method", args.method), ("run_dir", args.out)) if v is not None}
    if args.profiling:
        return _profiling(args, given)
    summary = run_quickstart(QuickstartConfig(data=args.data, labels=args.labels, bags=args.bags,
                                              tile_size=args.tile_size, steps=args.steps, overrides=args.overrides,
                                              **given))
    return _report(summary)


def _report(summary) -> int:
    """Print what summary.json holds, the headline and where MLflow shows the runs."""
    from sslray.tracking import ui_hint

    print(json.dumps(summary.to_json(), indent=2))
    print(f"\n{summary.headline()}")
    print(f"see every run in MLflow:  {ui_hint(summary.tracking_uri)}")
    return 0


def _profiling(args: argparse.Namespace, given: dict[str, str]) -> int:
    from sslray.quickstart.profiling import ProfilingQuickstartConfig, run_profiling_quickstart

    mine = [flag for flag, value in (("--data", args.data), ("--labels", args.labels), ("--bags", args.bags),
                                     ("--tile-size", args.tile_size)) if value is not None]
    if mine:
        raise ValueError(f"sslray quickstart --profiling runs on its synthetic screen; {', '.join(mine)} is not "
                         "supported with it (profile your own screen with sslray ingest, embed and profile)")
    return _report(run_profiling_quickstart(ProfilingQuickstartConfig(steps=args.steps, overrides=args.overrides,
                                                                      **given)))
