"""``sslray explain --checkpoint URL (--store URL | --slides PATH) --out URL [--images ID,...] [--head FILE
--class NAME] [--mask-channel NAME] [--config FILE] [key=value ...]``.

Loaded like every stage: ``load_config(ExplainConfig, --config, overrides)``; each flag is the
config key of its name (``--class`` is ``class_name``, ``--mpp`` and ``--tile-size`` are the
``tiling.`` keys ingest reads slides with), applied after the YAML; ``key=value`` overrides win.
"""

from __future__ import annotations

import argparse
import json

from sslray.cli.parsing import add_overrides

FLAGS = {"images": "images", "head": "head", "class_name": "class_name", "mask_channel": "mask_channel",
         "max_tiles": "max_tiles", "mpp": "tiling.mpp", "tile_size": "tiling.tile_size", "overwrite": "overwrite"}


HELP = "maps of where an encoder looks: ViT attention per head, CNN Grad-CAM of a linear head, stitched"
EPILOG = """examples:
  sslray explain --checkpoint ./out/checkpoints/NAME/checkpoint_x --store ./out/store --out ./out/explained
  sslray explain --checkpoint ./ckpt/vit --slides ./slides/CMU-1.svs --mpp 1.0 --out ./explained \\
      --mask-channel tissue max_tiles=64
  sslray explain --checkpoint ./ckpt/resnet50 --store ./stores/crc --out ./explained/tumor \\
      --head ./runs/results/linear_probe/ssl/head.safetensors --class TUM --images P1/img3,P2/img1

Per image it writes overlay.png (the maps over the stitched tiles), one .npy per map on the canvas
(head0..., or gradcam) and tile_maps.npy, with index.json listing the canvas and every tile's (x, y).
A ViT needs no head (its last block's class-token attention); a CNN needs --head (Grad-CAM)."""


def configure(sub: argparse._SubParsersAction) -> None:
    """Add ``sslray explain`` (its help examples live here)."""
    p = sub.add_parser("explain", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)
    p.intermixed = True  # flags may come after key=value overrides
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (local or URL)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="tile store URL")
    source.add_argument("--slides", help="explain straight from images: a folder, one file, or a CSV path[,label,...]; "
                                         "read and tiled as ingest does")
    p.add_argument("--out", required=True, help="where to write the explanations folder (PNGs, .npy maps, index.json)")
    p.add_argument("--images", type=lambda text: [i for i in text.split(",") if i],
                   help="comma-separated image_id or slide_id values (default: the first n_images=3)")
    p.add_argument("--head", help="CNN encoders: head.safetensors of `sslray evaluate --protocol linear` (Grad-CAM)")
    p.add_argument("--class", dest="class_name", help="the head's class to explain (default: each tile's predicted)")
    p.add_argument("--mask-channel", help="blank the map off this channel's Otsu foreground (e.g. DAPI), or "
                                          "'tissue' for a slide's tissue mask")
    p.add_argument("--max-tiles", type=int, help="tiles per image, in manifest order (default 256)")
    p.add_argument("--mpp", type=float, help="--slides: target microns per pixel (as in sslray ingest)")
    p.add_argument("--tile-size", type=int, help="--slides: tile edge in pixels (224)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an explanations folder at --out")
    p.add_argument("--config", help="YAML ExplainConfig")
    add_overrides(p)


def overrides(args: argparse.Namespace) -> list[str]:
    """The flags given, as ``key=value`` overrides of ``ExplainConfig``."""
    given = [f"checkpoint={json.dumps(args.checkpoint)}", f"out={json.dumps(args.out)}",
             f"store={json.dumps(args.store)}" if args.store else f"slides={json.dumps(args.slides)}"]
    for attr, key in FLAGS.items():
        if getattr(args, attr) is not None:
            given.append(f"{key}={json.dumps(getattr(args, attr))}")
    return given


def run(args: argparse.Namespace) -> int:
    from sslray import storage
    from sslray.config import load_config
    from sslray.explain.config import ExplainConfig
    from sslray.explain.run import run_explain

    out = run_explain(load_config(ExplainConfig, args.config, [*overrides(args), *args.overrides]))
    info = storage.read_json(storage.join(out, storage.SUCCESS_MARKER))
    print(f"wrote {info['method']} maps of {len(info['images'])} image(s), {info['n_tiles']} tiles, to {out}")
    return 0
