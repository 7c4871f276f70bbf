"""The pipeline-stage subcommands after ingest: pretrain, embed, evaluate, aggregate.

Each parses its flags into ``key=value`` overrides of the stage's config and calls the library.
"""

from __future__ import annotations

import argparse
import json

from sslray.cli.parsing import add_overrides
from sslray.config import load_config


def pretrain_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/)")
    add_overrides(p)


def run_pretrain(args: argparse.Namespace) -> int:
    from sslray.train.config import PretrainConfig
    from sslray.train.driver import run_pretrain

    result = run_pretrain(load_config(PretrainConfig, args.config, args.overrides))
    print(json.dumps({"checkpoint": result.checkpoint, "mlflow_run_id": result.run_id,
                      "tracking_uri": result.tracking_uri, "steps": result.steps}, indent=2))
    return 0


def embed_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (local or URL; `sslray checkpoint "
                                                        "import` makes one from published weights)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="tile store URL")
    source.add_argument("--slides", help="embed straight from images, no store: a folder, one file, or a CSV "
                                         "path[,label,...] (paths relative to the CSV); read and tiled as ingest does")
    p.add_argument("--out", required=True, help="where to write the embeddings table (parquet, one part per "
                                                "shard or slide); rerun the same command to resume a killed job")
    for flag, kind, text in _TILING_FLAGS:
        p.add_argument(flag, type=kind, help=f"--slides: {text} (as in sslray ingest)")
    p.add_argument("--empty-below", type=float, help="tiles with a tissue/foreground fraction below this get NaN "
                                                     "embeddings instead of being encoded (fields without cells)")
    p.add_argument("--on-error", choices=["stop", "skip"], help="a slide that cannot be read: keep the others and "
                                                               "stop before publishing (default), or skip it")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace a finished table at --out and discard an interrupted job's partitions")
    add_overrides(p)


_TILING_FLAGS = [("--mpp", float, "target microns per pixel"), ("--magnification", float, "target objective power"),
                 ("--mpp-override", float, "level-0 mpp for slides without metadata"),
                 ("--tile-size", int, "tile edge in pixels (224)"), ("--stride", int, "tile step in pixels "
                                                                               "(default: the tile size)"),
                 ("--min-tissue", float, "minimum tissue fraction of a slide tile (0.25)"),
                 ("--format", str, "reader: auto, image, slide or hdf5"),
                 ("--layout", str, "files, channel-folders or channel-files"),
                 ("--channel-pattern", str, "channel-files: regex with a (?P<channel>...) group"),
                 ("--foreground-channel", str, "the channel whose foreground is the tile's tissue_fraction"),
                 ("--labels", str, "CSV path,label[,group][,split] for a folder of images")]


def embed_overrides(args: argparse.Namespace) -> list[str]:
    """The flags given, as ``key=value`` overrides of ``EmbedConfig`` (tiling flags under ``tiling.``)."""
    given = [f"checkpoint={args.checkpoint}", f"out={args.out}",
             f"store={args.store}" if args.store else f"slides={args.slides}"]
    for flag, _, _ in _TILING_FLAGS:
        key = flag[2:].replace("-", "_")
        if getattr(args, key) is not None:
            given.append(f"tiling.{key}={json.dumps(getattr(args, key))}")
    for key in ("empty_below", "on_error", "overwrite"):
        if getattr(args, key) is not None:
            given.append(f"{key}={json.dumps(getattr(args, key))}")
    return given


def run_embed(args: argparse.Namespace) -> int:
    from sslray.infer.embed import EmbedConfig, run_embed

    out = run_embed(load_config(EmbedConfig, None, embed_overrides(args) + args.overrides))
    print(f"wrote embeddings to {out}")
    return 0


def evaluate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True,
                   help="embeddings table URL, or any parquet file/folder with an 'embedding' column")
    p.add_argument("--protocol", default="linear_probe",
                   help="evaluation protocol, registered under sslray/evaluate/: linear (linear_probe, the "
                        "default), knn, mil, survival, profiling (a profiles table as --embeddings)")
    p.add_argument("--bags", help="mil/survival: CSV bag_id,label[,patient_id] or bag_id,time,event[,patient_id]")
    p.add_argument("--config", help="YAML config of the protocol (see configs/evaluate/)")
    add_overrides(p)


def run_evaluate(args: argparse.Namespace) -> int:
    from sslray.evaluate.protocols import get_protocol

    protocol = get_protocol(args.protocol)
    given = [f"embeddings={args.embeddings}", *([f"bags={args.bags}"] if args.bags else [])]
    cfg = load_config(protocol.Config, args.config, [*given, *args.overrides])
    print(json.dumps(protocol.run(cfg), indent=2))
    return 0


def aggregate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="tile embeddings table (from sslray embed)")
    p.add_argument("--out", required=True, help="spot table URL: a local path or s3://bucket/prefix")
    p.add_argument("--config", help="YAML config (default: the built-in spot aggregator, as in configs/aggregate/)")
    add_overrides(p)


def run_aggregate(args: argparse.Namespace) -> int:
    from sslray.aggregate import AggregateConfig, run_aggregate

    cfg = load_config(AggregateConfig, args.config,
                      [f"embeddings={args.embeddings}", f"out={args.out}", *args.overrides])
    print(f"wrote the spot embeddings to {run_aggregate(cfg)}")
    return 0
