"""The inspection subcommands: ``sslray methods`` and ``sslray store info|verify``."""

from __future__ import annotations

import argparse
import json
import sys


def run_methods(args: argparse.Namespace) -> int:
    from sslray.methods import METHODS

    width = max(map(len, METHODS.names()))
    for name in METHODS.names():
        cls = METHODS.get(name)
        print(f"{name:<{width}}  {cls.summary}  (docs/methods/{cls.doc_page or name}.md)")
    return 0


def store_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["info", "verify"], help="info: summary; verify: check every shard's checksum")
    p.add_argument("url", help="tile store URL")


def run_store(args: argparse.Namespace) -> int:
    from sslray.data.integrity import store_summary, verify_store

    if args.action == "info":
        print(json.dumps(store_summary(args.url), indent=2))
        return 0
    problems = verify_store(args.url)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{args.url}: {'DAMAGED, ' + str(len(problems)) + ' problem(s)' if problems else 'OK'}")
    return 1 if problems else 0
