"""``sslray explain``: maps of where an encoder looks, for a handful of images, published as one folder.

A ViT checkpoint is explained by its last block's class-token attention, one map per head
(``attention``); a CNN checkpoint by the Grad-CAM of a linear head's class (``gradcam``, with
``head``: the ``head.safetensors`` of ``sslray evaluate --protocol linear``). A ViT given a head
is refused: its attention needs none, and Grad-CAM on tokens is not what this stage computes.

Per image (and per channel image of a channel-agnostic checkpoint) the folder holds
``overlay.png`` (the stitched maps over the stitched tiles), one ``<map>.npy`` per map on the
canvas (``head0``..., or ``gradcam``), ``tile_maps.npy`` (N, maps, h, w) as the encoder gave them,
and ``index.json`` lists everything with the canvas geometry and each tile's position, so a
map pixel can be traced to image coordinates. Published atomically (``publishing``, kind
``explanations``) and tracked in MLflow (stage ``explain``, the pictures and the index as
artifacts). In-process, no Ray: docs/protocols.md, "Explanations".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sslray import storage, tracking
from sslray.artifacts.checkpoint import CheckpointMeta, load_encoder
from sslray.artifacts.linear_head import LinearHead, read_head
from sslray.config import to_dict
from sslray.explain.attention import supports_attention, tile_attention
from sslray.explain.config import TISSUE, ExplainConfig
from sslray.explain.gradcam import last_stage, tile_gradcam
from sslray.explain.inputs import ImageTiles, source_images, store_images
from sslray.explain.pictures import display_image, plot_overlays
from sslray.explain.stitch import Canvas, channel_mask, masked, plan_canvas, resample_mask, stitch
from sslray.stage import input_name, publishing, tracked_run

KIND = "explanations"
INDEX = "index.json"


@dataclass
class Explainer:
    """An encoder and how it is explained: ``attention`` (ViT) or ``gradcam`` (CNN + linear head)."""

    method: str
    encoder: nn.Module
    meta: CheckpointMeta
    device: torch.device
    head: LinearHead | None = None
    class_index: int | None = None  # None: each tile's predicted class

    def tile_maps(self, tiles: np.ndarray, batch_size: int) -> tuple[np.ndarray, list[str] | None]:
        """(N, C', maps, h, w) float32, and for Grad-CAM the class each tile is explained for."""
        maps, classes = [], []
        for start in range(0, len(tiles), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(tiles[start : start + batch_size]))
            if self.method == "attention":
                maps.append(tile_attention(self.encoder, chunk, self.meta, self.device))
                continue
            cams, target = tile_gradcam(self.encoder, chunk, self.meta, self.head, self.class_index, self.device)
            maps.append(cams[:, :, None])
            classes += [self.head.classes[int(t)] for t in target]
        return np.concatenate(maps).astype(np.float32), (classes if self.method == "gradcam" else None)

    def map_names(self, n_maps: int) -> list[str]:
        return [f"head{i}" for i in range(n_maps)] if self.method == "attention" else ["gradcam"]


def make_explainer(cfg: ExplainConfig) -> Explainer:
    """The checkpoint's encoder and its method, refusing a combination that cannot be explained."""
    encoder, meta = load_encoder(cfg.checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder.to(device)
    name = meta.model.name
    if supports_attention(encoder):
        if cfg.head:
            raise ValueError(f"head {cfg.head}: Grad-CAM of a head is for CNN encoders, and {cfg.checkpoint} is a "
                             f"ViT ({name}), explained by its last block's attention, which needs no head; drop "
                             "--head/--class")
        return Explainer("attention", encoder, meta, device)
    if not cfg.head:
        raise ValueError(f"{cfg.checkpoint} is a {name} without class-token attention: it is explained by Grad-CAM "
                         "of a linear head's class; pass --head FILE (the head.safetensors `sslray evaluate "
                         "--protocol linear` writes beside results.json)")
    last_stage(encoder)  # a model with no conv stage fails here, before any tile is read
    head = read_head(cfg.head)
    index = head.class_index(cfg.class_name, f"--class ({cfg.head})") if cfg.class_name else None
    return Explainer("gradcam", encoder, meta, device, head, index)


def run_explain(cfg: ExplainConfig) -> str:
    """Explain ``cfg.images`` (default: the first ``n_images``); returns the URL of the published folder."""
    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before any work
    storage.check_destination(cfg.out, KIND, "explanations", cfg.overwrite)
    explainer = make_explainer(cfg)
    ids, images = (store_images if cfg.store else source_images)(cfg, explainer.meta)  # ids checked here
    tags = {"sslray.checkpoint": tracking.redact(cfg.checkpoint), "sslray.explanations": tracking.redact(cfg.out),
            "sslray.method": explainer.method,
            **({"sslray.store": tracking.redact(cfg.store)} if cfg.store else
               {"sslray.slides": tracking.redact(cfg.slides)})}
    with tracked_run(cfg.tracking, cfg.run_dir, stage="explain", input=cfg.name or input_name(cfg.out),
                     config=to_dict(cfg), tags=tags) as run, \
            publishing(cfg.out, kind=KIND, what="explanations", overwrite=cfg.overwrite) as output, \
            tempfile.TemporaryDirectory() as local:
        started = time.perf_counter()
        entries = [explain_image(explainer, image, i, cfg, local) for i, image in enumerate(images)]
        seconds = time.perf_counter() - started
        index = {"method": explainer.method, "checkpoint": tracking.redact(cfg.checkpoint),
                 "model": explainer.meta.model.name, "input": tracking.redact(cfg.store or cfg.slides),
                 "head": tracking.redact(cfg.head) if cfg.head else None, "class": cfg.class_name,
                 "mask_channel": cfg.mask_channel, "images": entries}
        Path(local, INDEX).write_text(json.dumps(index, indent=2))
        _copy_folder(local, output.staging)
        output.info.update({"method": explainer.method, "images": ids, "n_tiles": sum(e["n_tiles"] for e in entries)})
        run.log_files(_pictures_only(local), "explanations")
    run.log_metrics({"n_images": len(entries), "n_tiles": sum(e["n_tiles"] for e in entries), "seconds": seconds})
    return cfg.out


def explain_image(explainer: Explainer, image: ImageTiles, i: int, cfg: ExplainConfig, local: str) -> dict:
    """One image's maps, stitched, masked, drawn and saved under ``local``; its ``index.json`` entry."""
    maps, classes = explainer.tile_maps(image.tiles, cfg.batch_size)
    canvas = plan_canvas(image.xs, image.ys, image.footprint, image.tiles.shape[-1], cfg.max_side)
    pixels = stitch(image.tiles.astype(np.float32), canvas, image.xs, image.ys)
    mask = _mask(cfg.mask_channel, image, pixels, canvas)
    folder = f"{i:02d}_{_safe(image.image_id)}"
    per_channel = maps.shape[1] > 1
    sets = []
    for c in range(maps.shape[1]):
        channel = image.channels[c] if per_channel else None
        shown = display_image(pixels[c : c + 1] if per_channel else pixels, [channel] if per_channel else
                              image.channels, explainer.meta.scale)
        where = f"{folder}/{_safe(channel)}" if per_channel else folder
        sets.append(_write_set(explainer, maps[:, c], canvas, image, mask, shown, channel, os.path.join(local, where),
                               where))
    entry = {"image_id": image.image_id, "folder": folder, "n_tiles": len(image.tiles),
             "channels": image.channels, "footprint": image.footprint, "canvas": canvas.to_json(),
             "tiles": [[int(x), int(y)] for x, y in zip(image.xs, image.ys, strict=True)], "sets": sets}
    if classes is not None:
        entry["tile_classes"] = classes
    return entry


def _write_set(explainer: Explainer, maps: np.ndarray, canvas: Canvas, image: ImageTiles, mask: np.ndarray | None,
               shown: np.ndarray, channel: str | None, folder: str, where: str) -> dict:
    """One map set (the image, or one channel image): the per-map .npy, tile_maps.npy and overlay.png."""
    os.makedirs(folder, exist_ok=True)
    names = explainer.map_names(maps.shape[1])
    stitched = masked(stitch(maps, canvas, image.xs, image.ys), mask)
    for name, values in zip(names, stitched, strict=True):
        np.save(os.path.join(folder, f"{name}.npy"), values)
    np.save(os.path.join(folder, "tile_maps.npy"), maps)
    what = "last-block attention" if explainer.method == "attention" else "Grad-CAM"
    title = f"{image.image_id}{' ' + channel if channel else ''}: {what}, {explainer.meta.model.name}"
    plot_overlays(shown, stitched, names, title, os.path.join(folder, "overlay.png"))
    return {"channel": channel, "png": f"{where}/overlay.png", "maps": {n: f"{where}/{n}.npy" for n in names},
            "tile_maps": f"{where}/tile_maps.npy"}


def _mask(mask_channel: str | None, image: ImageTiles, pixels: np.ndarray, canvas: Canvas) -> np.ndarray | None:
    """Where the maps are kept: a channel's Otsu foreground, the slide's tissue, or everywhere (None)."""
    if mask_channel is None:
        return None
    if mask_channel == TISSUE:
        if image.slide is None:
            raise ValueError(f"mask_channel=tissue: {image.image_id} is not a slide whose file can be opened "
                             "(fields: name a channel such as DAPI instead)")
        import tiffslide

        from sslray.data.wsi import tissue_mask

        with tiffslide.TiffSlide(str(image.slide)) as slide:
            return resample_mask(*tissue_mask(slide), canvas)
    if mask_channel not in image.channels:
        raise ValueError(f"mask_channel {mask_channel!r}: {image.image_id} has no such channel among the explained "
                         f"ones {image.channels}")
    return channel_mask(pixels[image.channels.index(mask_channel)])


def _safe(name: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name or "")


def _copy_folder(local: str, url: str) -> None:
    for path in sorted(Path(local).rglob("*")):
        if path.is_file():
            storage.write_bytes(storage.join(url, path.relative_to(local).as_posix()), path.read_bytes())


def _pictures_only(local: str) -> str:
    """A sibling folder with the PNGs and the index only (the .npy maps stay out of MLflow)."""
    shown = os.path.join(local, ".mlflow")
    for path in Path(local).rglob("*"):
        if path.suffix in (".png", ".json") and ".mlflow" not in path.parts:
            target = Path(shown, path.relative_to(local))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return shown
