"""The ``sslray`` command: one subcommand per pipeline stage, plus quickstart and methods.

Subcommands parse arguments into the stage's config dataclass and call the library; they
hold no logic of their own. ``key.sub=value`` arguments override any config key. One module
per kind of subcommand: ``ingest``, ``stages`` (pretrain, embed, evaluate, aggregate), ``profile``,
``quickstart``, ``submit``, ``info`` (methods, store), ``checkpoint``; their ``--help`` examples are in
``epilogs`` (``checkpoint`` keeps its own with its actions).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable

from sslray.cli import checkpoint, explain, features, info, ingest, profile, quickstart, stages, submit
from sslray.cli.epilogs import EPILOGS
from sslray.cli.parsing import Parser
from sslray.errors import user_message


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as err:  # an input problem ends in one line; a bug keeps its traceback
        message = user_message(err)
        if message is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"sslray {args.command}: error: {message}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sslray", description="Self-supervised learning for microscopy and pathology on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    ingest.configure(_add(sub, "ingest", "cut a folder of images into a tile store", ingest.run))
    stages.pretrain_parser(_add(sub, "pretrain", "self-supervised pretraining on Ray Train", stages.run_pretrain))
    stages.embed_parser(_add(sub, "embed", "embed a tile store, or slides straight from files, with a checkpoint (Ray Data, resumable)", stages.run_embed))
    stages.evaluate_parser(_add(sub, "evaluate", "linear probe of an embeddings table (Ray Tune grid)",
                                stages.run_evaluate))
    stages.aggregate_parser(_add(sub, "aggregate", "second-level SSL: one embedding per spot from its tiles' "
                                                   "embeddings", stages.run_aggregate))
    profile.configure(_add(sub, "profile", "image-based profiling: tile embeddings -> normalised well profiles",
                           profile.run))
    features.configure(_add(sub, "features", "import other tools' tile features as an embeddings table", features.run))
    checkpoint.configure(sub)  # its help examples live in sslray/cli/checkpoint.py
    explain.configure(sub)  # its help examples live in sslray/cli/explain.py
    quickstart.configure(_add(sub, "quickstart", "ingest -> pretrain -> embed -> evaluate in one go", quickstart.run))
    _add(sub, "methods", "list the registered SSL methods", info.run_methods)
    info.store_parser(_add(sub, "store", "inspect or verify a tile store", info.run_store))
    submit.configure(_add(sub, "submit", "run a stage as a Ray job on a cluster, streaming its logs", submit.run))
    return parser


def _add(sub, name: str, help_text: str, func: Callable) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOGS[name],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p

