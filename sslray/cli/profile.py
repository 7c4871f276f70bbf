"""``sslray profile --embeddings URL --out URL [--metadata CSV] [--config FILE] [key=value ...]``.

Loaded like every stage: ``load_config(ProfileConfig, --config, overrides)``; ``--embeddings``,
``--out`` and ``--metadata`` are the config keys of their names, applied after the YAML, and
explicit ``key=value`` overrides come last and win.
"""

from __future__ import annotations

import argparse
import json

from sslray.cli.parsing import add_overrides


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="tile embeddings table (from sslray embed or features import)")
    p.add_argument("--out", required=True, help="profiles table URL: a local path or s3://bucket/prefix")
    p.add_argument("--metadata", help="plate map CSV: plate, well and any of perturbation, control, batch, moa, ...")
    p.add_argument("--config", help="YAML ProfileConfig (see configs/profile/cellpainting.yaml)")
    add_overrides(p)


def run(args: argparse.Namespace) -> int:
    from sslray import storage
    from sslray.config import load_config
    from sslray.profile.config import ProfileConfig
    from sslray.profile.run import run_profile

    given = [f"embeddings={json.dumps(args.embeddings)}", f"out={json.dumps(args.out)}",
             *([f"metadata={json.dumps(args.metadata)}"] if args.metadata else [])]
    out = run_profile(load_config(ProfileConfig, args.config, [*given, *args.overrides]))
    info = storage.read_json(storage.join(out, storage.SUCCESS_MARKER))
    print(f"wrote {info['n_profiles']} {info['level']} profiles ({info['n_wells']} wells, {info['n_features']} "
          f"features) to {out}")
    return 0
