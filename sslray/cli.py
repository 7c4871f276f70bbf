"""The ``sslray`` command: one subcommand per pipeline stage, plus quickstart and methods.

Subcommands parse arguments into the stage's config dataclass and call the library; they
hold no logic of their own. ``key.sub=value`` arguments override any config key.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable

from sslray.config import load_config
from sslray.data.readers import MAX_PIXELS
from sslray.errors import user_message

EPILOGS = {
    "ingest": """examples:
  sslray ingest ./images ./stores/cells --tile-size 224
  sslray ingest ./slides_png s3://bucket/stores/crc --labels labels.csv --on-error skip
  sslray ingest ./mibi_fovs ./stores/mibi --layout channel-folders --tile-size 256
  sslray ingest ./slides s3://bucket/stores/tcga --mpp 0.5 --tile-size 224   # SVS/NDPI/pyramidal TIFF

Labels come from class sub-folders (images/<label>/x.png) or from a CSV with columns
path,label[,group][,split]; group is the patient/slide id used for grouped splits.""",
    "pretrain": """examples:
  sslray pretrain --config configs/quickstart.yaml store=./out/store
  sslray pretrain --config configs/methods/dino.yaml store=s3://bucket/stores/crc \\
      train.num_workers=8 train.use_gpu=true out=s3://bucket/runs tracking.uri=http://mlflow:5000

Re-running with the same name and out resumes from the latest checkpoint.""",
    "embed": """examples:
  sslray embed --checkpoint ./out/checkpoints/quickstart-dino/checkpoint_<date> \\
      --store ./out/store --out ./out/embeddings/ssl     # the path `sslray pretrain` printed
  sslray embed --checkpoint s3://bucket/runs/ckpt --store s3://bucket/stores/crc \\
      --out s3://bucket/emb/crc num_actors=4 use_gpu=true""",
    "evaluate": """examples:
  sslray evaluate --embeddings ./out/embeddings/ssl
  sslray evaluate --embeddings ./out/embeddings/ssl label_column=label group_column=patient \\
      'c_grid=[0.01,0.1,1]'

group_column keeps a patient's (slide's) tiles on one side of every split; a named column must
exist. Unset, the splits group by the ingest's group column if every tile has one, else by
image_id (a warning says so).""",
    "aggregate": """examples:
  sslray aggregate --embeddings ./out/embeddings/ssl --out ./out/spots
  sslray aggregate --config configs/aggregate/spot_dino.yaml --embeddings s3://b/emb/tma --out s3://b/spots/tma \
      spot_column=spot_id steps=2000""",
    "quickstart": """examples:
  sslray quickstart                                  # synthetic cell images, ~6 min on 2 cores
  sslray quickstart --data ./crc_tiles               # class sub-folders of 224-px tiles
  sslray quickstart --data ./tiles --labels labels.csv --out ./qs""",
    "submit": """examples:
  ray dashboard cluster/aws.yaml &                   # forwards the Jobs API to http://127.0.0.1:8265
  sslray submit quickstart
  sslray submit pretrain --config configs/methods/dino.yaml store=s3://b/stores/crc out=s3://b/runs \
      train.num_workers=8 train.use_gpu=true --address http://127.0.0.1:8265
  sslray submit embed --no-wait --checkpoint s3://b/runs/checkpoints/dino/checkpoint_x --store s3://b/stores/crc \
      --out s3://b/emb/crc use_gpu=true

STAGE is one of jobs/ (ingest, pretrain, embed, evaluate, aggregate, quickstart); every other argument
goes to it unchanged (after a lone -- even --address would). This checkout is uploaded as the job's
working directory. MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL and AWS_DEFAULT_REGION travel with the job;
credentials never do (the nodes have their own). Exit status: 0 when the job succeeded.""",
    "methods": """example:
  sslray methods""",
    "store": """examples:
  sslray store info ./stores/cells          # tiles, channels, groups, size, per-channel stats
  sslray store verify s3://bucket/stores/crc  # recompute shard checksums; exit 1 naming damaged files""",
}


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
    parser = argparse.ArgumentParser(prog="sslray", description="Self-supervised learning for microscopy and pathology on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _ingest_parser(_add(sub, "ingest", "cut a folder of images into a tile store", _cmd_ingest))
    _pretrain_parser(_add(sub, "pretrain", "self-supervised pretraining on Ray Train", _cmd_pretrain))
    _embed_parser(_add(sub, "embed", "embed a tile store with a checkpoint (Ray Data)", _cmd_embed))
    _evaluate_parser(_add(sub, "evaluate", "linear probe of an embeddings table (Ray Tune grid)", _cmd_evaluate))
    _aggregate_parser(_add(sub, "aggregate", "second-level SSL: one embedding per spot from its tiles' embeddings",
                           _cmd_aggregate))
    _quickstart_parser(_add(sub, "quickstart", "ingest -> pretrain -> embed -> evaluate in one go", _cmd_quickstart))
    _add(sub, "methods", "list the registered SSL methods", _cmd_methods)
    _store_parser(_add(sub, "store", "inspect or verify a tile store", _cmd_store))
    _submit_parser(_add(sub, "submit", "run a stage as a Ray job on a cluster, streaming its logs", _cmd_submit))
    return parser


def _add(sub, name: str, help_text: str, func: Callable) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOGS[name],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override any config key")


def _ingest_parser(p):
    p.add_argument("src", help="folder of images (PNG, JPEG, TIFF)")
    p.add_argument("dest", help="tile store URL: a local path or s3://bucket/prefix")
    p.add_argument("--tile-size", type=int, default=224, help="tile edge in pixels (default 224)")
    p.add_argument("--labels", help="CSV with columns path,label[,group][,split] (paths relative to SRC)")
    p.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                   help="stop at the first bad file (default) or skip it and list it in ingest_report.json")
    p.add_argument("--layout", choices=["files", "channel-folders", "channel-files"], default="files",
                   help="files: one image file per field (default); channel-folders: one folder per field "
                        "holding one single-channel file per marker; channel-files: single-channel files side by "
                        "side, grouped into fields by --channel-pattern (Cell Painting)")
    p.add_argument("--channel-pattern",
                   help="channel-files: regex on file names with a (?P<channel>...) group; other named groups "
                        "(well, site, plate...) become manifest columns, e.g. "
                        "'(?P<well>r\\d+c\\d+)f(?P<site>\\d+)p\\d+-ch(?P<channel>\\d+)'")
    p.add_argument("--channel-names",
                   help="rename channel keys: KEY=NAME,... (e.g. 1=DNA,2=ER) or a CSV file with columns key,name")
    p.add_argument("--format", choices=["auto", "image", "slide", "hdf5"], default="auto",
                   help="reader: auto (from the file name, default), image (PNG/JPEG/TIFF/OME-TIFF/QPTIFF/NPY), "
                        "slide (whole-slide pyramid via tiffslide), hdf5 (Images + Names)")
    p.add_argument("--channels", help="comma-separated channel names (channel-folders: the markers to keep, in order)")
    p.add_argument("--mpp", type=float, help="whole slides: tile at this many microns per pixel "
                                             "(also reads .tif files as slides)")
    p.add_argument("--magnification", type=float, help="whole slides: tile at this objective power instead (e.g. 20)")
    p.add_argument("--mpp-override", type=float, help="whole slides: level-0 mpp for slides without metadata")
    p.add_argument("--min-tissue", type=float, default=0.25, help="whole slides: minimum tissue fraction (0.25)")
    p.add_argument("--foreground-channel", help="compute each tile's foreground fraction on this channel "
                                                "(e.g. DAPI) instead of the channel mean")
    p.add_argument("--float-max", help="float images: value(s) mapped to full scale, one or comma-separated per channel")
    p.add_argument("--log1p", action="store_true", help="float images: apply log1p before scaling")
    p.add_argument("--clip-percentiles", help="LOW,HIGH (e.g. 0.5,99.5): map each channel's dataset percentiles "
                                              "(from a sample of images) to 0 and full scale, clipping outside")
    p.add_argument("--magnification-groups", action="store_true",
                   help="BreakHis-style data: read each image's magnification from a 40X folder or a _40x_ file-name "
                        "token and group the same field across magnifications (manifest columns magnification, "
                        "field_id)")
    p.add_argument("--compression", choices=["lz4", "zstd"], default="lz4",
                   help="store codec: lz4 reads fastest (default), zstd is smaller (archives, slow links)")
    p.add_argument("--workers", type=int, help="parallel tiling tasks on the Ray cluster (default: one per CPU; "
                                               "0: in this process, without Ray)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help=f"refuse whole images larger than this many pixels per plane (default {MAX_PIXELS:,} = "
                        "16384^2; a guard against decompression bombs; whole slides are read by region and exempt)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing tile store at DEST (and discard what an interrupted ingest left to "
                        "resume); a file or a folder that is not an sslray tile store is never replaced")


def _channel_names(value: str | None) -> dict[str, str] | None:
    """``1=DNA,2=ER`` or a CSV file with columns ``key,name``."""
    if not value:
        return None
    if "=" not in value:
        import csv

        with open(value, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or not {"key", "name"} <= set(rows[0]):
            raise ValueError(f"--channel-names {value}: expected a CSV with columns key,name")
        return {row["key"]: row["name"] for row in rows}
    pairs = [item.split("=", 1) for item in value.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--channel-names {value!r}: expected KEY=NAME,KEY=NAME or a CSV file")
    return dict(pairs)


def _numbers(option: str, value: str | None) -> list[float] | None:
    """``1.5`` or ``0.5,99.5`` -> floats; anything else is an error naming the option."""
    if not value:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise ValueError(f"{option} {value!r}: expected a number or comma-separated numbers (e.g. 0.5,99.5)") from None


def _cmd_ingest(args) -> int:
    from sslray.data.ingest import IngestConfig, ingest_folder

    cfg = IngestConfig(src=args.src, dest=args.dest, tile_size=args.tile_size, labels=args.labels,
                       on_error=args.on_error, overwrite=args.overwrite, layout=args.layout, mpp=args.mpp,
                       magnification=args.magnification, mpp_override=args.mpp_override, min_tissue=args.min_tissue,
                       float_max=_numbers("--float-max", args.float_max), log1p=args.log1p, workers=args.workers,
                       clip_percentiles=_numbers("--clip-percentiles", args.clip_percentiles),
                       max_pixels=args.max_pixels,
                       magnification_groups=args.magnification_groups, compression=args.compression,
                       format=args.format, channel_pattern=args.channel_pattern,
                       channel_names=_channel_names(args.channel_names),
                       foreground_channel=args.foreground_channel,
                       channels=args.channels.split(",") if args.channels else None)
    store = ingest_folder(cfg)
    print(f"wrote {len(store)} tiles ({', '.join(store.info.channels)}; {store.info.dtype}) to {store.url}")
    return 0


def _pretrain_parser(p):
    p.add_argument("--config", help="YAML config (see configs/)")
    _overrides(p)


def _cmd_pretrain(args) -> int:
    from sslray.train.config import PretrainConfig
    from sslray.train.ray_train import run_pretrain

    result = run_pretrain(load_config(PretrainConfig, args.config, args.overrides))
    print(json.dumps({"checkpoint": result.checkpoint, "mlflow_run_id": result.run_id,
                      "tracking_uri": result.tracking_uri, "steps": result.steps}, indent=2))
    return 0


def _embed_parser(p):
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (local or URL)")
    p.add_argument("--store", required=True, help="tile store URL")
    p.add_argument("--out", required=True, help="where to write the embeddings table (parquet)")
    _overrides(p)


def _cmd_embed(args) -> int:
    from sslray.infer.embed import EmbedConfig, run_embed

    base = [f"checkpoint={args.checkpoint}", f"store={args.store}", f"out={args.out}"]
    out = run_embed(load_config(EmbedConfig, None, base + args.overrides))
    print(f"wrote embeddings to {out}")
    return 0


def _evaluate_parser(p):
    p.add_argument("--embeddings", required=True, help="embeddings table URL")
    p.add_argument("--config", help="YAML config (see configs/evaluate/)")
    _overrides(p)


def _cmd_evaluate(args) -> int:
    from sslray.evaluate.run import EvaluateConfig, run_evaluate

    cfg = load_config(EvaluateConfig, args.config, [f"embeddings={args.embeddings}", *args.overrides])
    print(json.dumps(run_evaluate(cfg), indent=2))
    return 0


def _aggregate_parser(p):
    p.add_argument("--embeddings", required=True, help="tile embeddings table (from sslray embed)")
    p.add_argument("--out", required=True, help="spot table URL: a local path or s3://bucket/prefix")
    p.add_argument("--config", help="YAML config (default: the built-in spot DINO, configs/aggregate/spot_dino.yaml)")
    _overrides(p)


def _cmd_aggregate(args) -> int:
    from sslray.aggregate import AggregateConfig, run_aggregate

    cfg = load_config(AggregateConfig, args.config,
                      [f"embeddings={args.embeddings}", f"out={args.out}", *args.overrides])
    print(f"wrote the spot embeddings to {run_aggregate(cfg)}")
    return 0


def _quickstart_parser(p):
    p.add_argument("--data", help="folder of images (class sub-folders, or --labels); default: synthetic cells")
    p.add_argument("--labels", help="CSV with columns path,label[,group]")
    p.add_argument("--method", default="dino", help="SSL method (see `sslray methods`)")
    p.add_argument("--out", default="sslray-quickstart", help="output folder (default ./sslray-quickstart)")
    p.add_argument("--tile-size", type=int, help="tile edge (default 64 synthetic, 224 for --data)")
    p.add_argument("--steps", type=int, help="pretraining steps (default: scaled with the data)")
    _overrides(p)


def _cmd_quickstart(args) -> int:
    from sslray.methods import METHODS
    from sslray.quickstart import QuickstartConfig, run_quickstart
    from sslray.tracking import ui_hint

    from sslray.aggregate import AGGREGATORS

    if args.method not in AGGREGATORS:
        METHODS.get(args.method)  # an unknown name fails here, listing the registered ones
    summary = run_quickstart(QuickstartConfig(data=args.data, labels=args.labels, method=args.method, out=args.out,
                                              tile_size=args.tile_size, steps=args.steps, overrides=args.overrides))
    print(json.dumps(summary, indent=2))
    (name, ours), (base_name, base) = [(k, v) for k, v in summary.items() if isinstance(v, dict)][:2]
    print(f"\nlinear probe balanced accuracy: {name} {ours['balanced_accuracy']:.3f} vs {base_name} "
          f"{base['balanced_accuracy']:.3f} (macro AUC {ours['macro_auc']:.3f} vs {base['macro_auc']:.3f})")
    print(f"see every run in MLflow:  {ui_hint(summary['tracking_uri'])}")
    return 0


def _store_parser(p):
    p.add_argument("action", choices=["info", "verify"], help="info: summary; verify: check every shard's checksum")
    p.add_argument("url", help="tile store URL")


def _cmd_store(args) -> int:
    from sslray.data.integrity import store_summary, verify_store

    if args.action == "info":
        print(json.dumps(store_summary(args.url), indent=2))
        return 0
    problems = verify_store(args.url)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{args.url}: {'DAMAGED, ' + str(len(problems)) + ' problem(s)' if problems else 'OK'}")
    return 1 if problems else 0


def _submit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="the cluster's Jobs API (dashboard) URL; default $RAY_ADDRESS if it is an "
                                     "http URL, else http://127.0.0.1:8265")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return instead of following it")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable for the job (not for credentials)")
    p.add_argument("--submission-id", help="job id to use (default: Ray picks one)")


def _submit_parser(p):
    _submit_options(p)
    p.add_argument("stage", help="the stage to run: a script in jobs/")
    p.add_argument("stage_args", nargs=argparse.REMAINDER, metavar="...", help="the stage's own arguments")


def _cmd_submit(args) -> int:
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


def _cmd_methods(args) -> int:
    from sslray.methods import METHODS

    from sslray.aggregate import AGGREGATORS

    width = max(map(len, [*METHODS.names(), *AGGREGATORS]))
    for name in METHODS.names():
        print(f"{name:<{width}}  {METHODS.get(name).summary}  (docs/methods/{name}.md)")
    for name, summary in AGGREGATORS.items():
        print(f"{name:<{width}}  {summary}  (sslray aggregate; docs/methods/spot_aggregator.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
