"""``sslray features import SRC OUT [--config FILE.yaml] [flags] [key=value ...]``.

Loaded like every other stage: ``load_config(ImportConfig, --config, overrides)``. Each flag is a
shortcut for the ImportConfig key of its name (``--format h5`` is ``format=h5``) and is applied
after the YAML; explicit ``key=value`` overrides come last and win.
"""

from __future__ import annotations

import argparse
import json

from sslray.cli.epilogs import EPILOGS
from sslray.cli.parsing import Parser, add_overrides

FLAGS = ("src", "out", "format", "metadata", "slide_id_column", "feature_prefix", "overwrite")


def configure(p: argparse.ArgumentParser) -> None:
    """``sslray features``: one action for now, ``import``."""
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    help_text = "turn HistoSSLscaling, CLAM/TRIDENT or table features into an sslray embeddings table"
    imp = actions.add_parser("import", help=help_text, description=help_text, epilog=EPILOGS["features"],
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.intermixed = True  # flags may come between SRC OUT and the key=value overrides
    imp.add_argument("src", help="folder (or one file) of per-slide features, local or s3://")
    imp.add_argument("out", help="embeddings table URL: a local path or s3://bucket/prefix")
    imp.add_argument("--config", help="YAML ImportConfig (see configs/features/import.yaml)")
    imp.add_argument("--format", choices=["auto", "histossl", "h5", "table"],
                     help="layout of SRC: auto (detected, default), histossl (<slide>/features.npy), "
                          "h5 (CLAM/TRIDENT *.h5), table (parquet or CSV)")
    imp.add_argument("--metadata", help="CSV with a slide_id column; its other columns (patient_id, label...) "
                                        "are joined onto every tile of the slide")
    imp.add_argument("--slide-id-column", help="tables: the column naming each row's slide (default slide_id)")
    imp.add_argument("--feature-prefix", help="tables: feature columns start with this (default: all numeric)")
    imp.add_argument("--overwrite", action="store_true", default=None,
                     help="replace an existing embeddings table at OUT (never anything else)")
    add_overrides(imp)


def run(args: argparse.Namespace) -> int:
    """The action asked for (``import`` is the only one)."""
    return {"import": run_import}[args.action](args)


def run_import(args: argparse.Namespace) -> int:
    from sslray import storage
    from sslray.config import load_config
    from sslray.features.run import ImportConfig, run_import

    out = run_import(load_config(ImportConfig, args.config, [*flag_overrides(args), *args.overrides]))
    info = storage.read_json(storage.join(out, storage.SUCCESS_MARKER))
    print(f"wrote {info['n_rows']} tiles of {info['n_slides']} slides ({info['format']}, dim {info['dim']}) "
          f"to {out}")
    return 0


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """SRC, OUT and every flag given, as ``key=value`` overrides (JSON-quoted, so ``001`` stays text)."""
    return [f"{key}={json.dumps(getattr(args, key))}" for key in FLAGS if getattr(args, key, None) is not None]
