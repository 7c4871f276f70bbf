"""``sslray submit STAGE [options] [stage args ...]``: a stage as a Ray job on a cluster."""

from __future__ import annotations

import argparse


def _submit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="the cluster's Jobs API (dashboard) URL; default $RAY_ADDRESS if it is an "
                                     "http URL, else http://127.0.0.1:8265")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return instead of following it")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable for the job (not for credentials)")
    p.add_argument("--submission-id", help="job id to use (default: Ray picks one)")


def configure(p: argparse.ArgumentParser) -> None:
    _submit_options(p)
    p.add_argument("stage", help="the stage to run: a script in jobs/")
    p.add_argument("stage_args", nargs=argparse.REMAINDER, metavar="...", help="the stage's own arguments")


def run(args: argparse.Namespace) -> int:
    from sslray.submit import SubmitConfig, submit

    mine, theirs = _split_submit_args(args.stage_args)
    env = {}
    for item in [*args.env, *mine.env]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    cfg = SubmitConfig(stage=args.stage, args=theirs, address=mine.address or args.address,
                       wait=not (mine.no_wait or args.no_wait), env=env,
                       submission_id=mine.submission_id or args.submission_id)
    return submit(cfg)


def _split_submit_args(stage_args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Submit's own options may follow STAGE (``sslray submit pretrain --address URL ...``); what
    is not one of them, and everything after a lone ``--``, is the stage's."""
    cut = stage_args.index("--") if "--" in stage_args else len(stage_args)
    own = argparse.ArgumentParser(add_help=False)
    _submit_options(own)
    mine, theirs = own.parse_known_args(stage_args[:cut])
    return mine, theirs + stage_args[cut + 1:]
