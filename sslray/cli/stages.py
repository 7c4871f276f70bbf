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
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (local or URL)")
    p.add_argument("--store", required=True, help="tile store URL")
    p.add_argument("--out", required=True, help="where to write the embeddings table (parquet)")
    add_overrides(p)


def run_embed(args: argparse.Namespace) -> int:
    from sslray.infer.embed import EmbedConfig, run_embed

    base = [f"checkpoint={args.checkpoint}", f"store={args.store}", f"out={args.out}"]
    out = run_embed(load_config(EmbedConfig, None, base + args.overrides))
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
