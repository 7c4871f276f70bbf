"""argparse pieces shared by every subcommand: the parser class and the ``key.sub=value`` argument."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose ``intermixed`` subcommands take flags between positionals.

    Plain argparse refuses ``sslray ingest SRC DEST --tile-size 224 key=value``: the ``key=value``
    list was already matched (empty) with SRC DEST, before the flag. Intermixed parsing reads
    every flag first, then the positionals.
    """

    intermixed = False

    def parse_known_args(self, args=None, namespace=None):
        if not self.intermixed:
            return super().parse_known_args(args, namespace)
        self.intermixed = False  # parse_known_intermixed_args calls back into parse_known_args
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self.intermixed = True


def add_overrides(p: argparse.ArgumentParser) -> None:
    # default=[]: else argparse counts a "*" positional as required and names it when SRC is missing
    p.add_argument("overrides", nargs="*", default=[], metavar="key.sub=value", help="override any config key")
