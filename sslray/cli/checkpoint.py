"""``sslray checkpoint import --model NAME --weights FILE|URL --out URL [flags]``.

Flags become an ``ImportSpec`` (sslray.artifacts.checkpoint_import); the help examples live
here with the parser, since this command groups its own actions.
"""

from __future__ import annotations

import argparse
import json

from sslray.cli.parsing import Parser

EPILOG = """examples:
  sslray checkpoint import --model vit_base_patch16_224 \\
      --weights https://huggingface.co/owkin/phikon/resolve/main/model.safetensors \\
      --out ./checkpoints/phikon --mpp 0.5        # Phikon (iBOT ViT-B/16, Hugging Face layout)
  sslray checkpoint import --model resnet50 --weights ./resnet50-11ad3fa6.pth --out ./checkpoints/rn50
  sslray checkpoint import --model vit_small_patch16_224 --weights s3://bucket/unidino/teacher.pth \\
      --out s3://bucket/checkpoints/unidino --in-chans 1 --mean 0.1 --std 0.2 --per-channel

The checkpoint is an sslray one like any trained: `sslray embed --checkpoint OUT ...` reads it.
Layouts: timm (and DINO/iBOT/DDP wrappers), hf_vit (transformers ViTModel: Phikon), torchvision
(ResNet, ViT); auto tells them apart by their keys. Defaults: ImageNet mean/std, the model's
input size, scale 255 (8-bit tiles)."""
LAYOUT_CHOICES = ("auto", "timm", "hf_vit", "torchvision")


def configure(sub: argparse._SubParsersAction) -> None:
    """Add ``sslray checkpoint`` and its one action, ``import``."""
    help_text = "turn a published encoder (Phikon, timm, torchvision) into an sslray checkpoint"
    p = sub.add_parser("checkpoint", help=help_text, description=help_text, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    imp = actions.add_parser("import", help=help_text, description=help_text, epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("--model", required=True, help="timm model name, e.g. vit_base_patch16_224 for Phikon")
    imp.add_argument("--weights", required=True, help="safetensors or torch.save state dict: a path, s3:// or https://")
    imp.add_argument("--out", required=True, help="checkpoint directory to publish (local or s3://)")
    imp.add_argument("--layout", choices=LAYOUT_CHOICES, default="auto", help="naming of the weights (default auto)")
    imp.add_argument("--model-kwargs", type=_json_object, default={}, metavar="JSON",
                     help='more timm.create_model arguments, e.g. \'{"img_size": 256}\'')
    imp.add_argument("--in-chans", type=int, help="input channels (default 3; 1 with --per-channel); RGB weights "
                                                  "are adapted by timm's rule")
    imp.add_argument("--mean", type=_floats, help="per-channel mean of unit-scaled pixels, a,b,c (default ImageNet)")
    imp.add_argument("--std", type=_floats, help="per-channel std, a,b,c (default ImageNet)")
    imp.add_argument("--image-size", type=int, help="tiles are resized to this (default: the model's input size)")
    imp.add_argument("--mpp", type=float, help="microns per pixel the encoder was trained at (recorded)")
    imp.add_argument("--scale", type=float, default=255.0, help="full-scale pixel value (default 255, uint8 tiles)")
    imp.add_argument("--per-channel", action="store_true", help="channel-agnostic: embed each channel on its own")
    imp.add_argument("--overwrite", action="store_true", help="replace a checkpoint imported earlier at --out")


def run(args: argparse.Namespace) -> int:
    """The action asked for (``import`` is the only one)."""
    return {"import": run_import}[args.action](args)


def run_import(args: argparse.Namespace) -> int:
    from sslray.artifacts.checkpoint_import import ImportSpec, import_checkpoint

    spec = ImportSpec(model=args.model, weights=args.weights, out=args.out, layout=args.layout,
                      kwargs=args.model_kwargs, in_chans=args.in_chans, mean=args.mean, std=args.std,
                      image_size=args.image_size, mpp=args.mpp, scale=args.scale, per_channel=args.per_channel,
                      overwrite=args.overwrite)
    meta = import_checkpoint(spec)
    print(f"wrote checkpoint {args.out}: {meta.model.name} ({meta.source['layout']} layout), {meta.embed_dim}-d "
          f"features of {meta.in_chans}-channel {meta.image_size}-px tiles")
    return 0


def _floats(text: str) -> list[float]:
    """``0.5,0.5,0.5`` -> [0.5, 0.5, 0.5] (argparse names the flag when this raises)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.5,0.5,0.5, got {text!r}") from None


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"img_size\": 256}}', got {text!r}")
    return value
