"""``sslray quickstart``: ingest -> pretrain -> embed -> evaluate in one go, on CPU.

With no data it writes the deterministic synthetic cell set (``sslray.data.synthetic``).
The same backbone, untrained, goes through the same embed + probe path as a baseline, so
``summary.json`` says whether self-supervision learned anything.

The recipe is sized for 2 CPU cores: a 4-block ViT of width 96 working at a fixed 48-px
view resolution (6x6 tokens for global views, 3x3 for local ones) whatever the tile size,
and a step count that fits the advertised time on the data's size. Larger tiles are
downsampled into the views; on a GPU use a real recipe (configs/methods/).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslray import storage
from sslray.config import apply_override, from_dict, to_dict
from sslray.data.ingest import IngestConfig, ingest_folder
from sslray.data.store import TileStore
from sslray.evaluate.run import EvaluateConfig, run_evaluate
from sslray.infer.embed import EmbedConfig, run_embed
from sslray.aggregate import AGGREGATORS
from sslray.methods import METHODS
from sslray.train.config import PretrainConfig

log = logging.getLogger(__name__)

SYNTHETIC_TILE = 64
USER_TILE = 224
# Step caps that keep training to ~8 min on 2 cores (measured: ~0.3 s/step on 64-px tiles,
# ~0.45 s/step on 224-px RGB tiles, where reading and cropping the larger tiles costs more).
MAX_STEPS_SMALL_TILES = 1500
MAX_STEPS_LARGE_TILES = 800
LARGE_TILE = 96


@dataclass
class QuickstartConfig:
    data: str | None = None
    labels: str | None = None
    method: str = "dino"
    out: str = "sslray-quickstart"
    tile_size: int | None = None  # default: 64 for the synthetic set, 224 for user data
    steps: int | None = None  # default: scaled with the data (see quickstart_steps)
    overrides: list[str] = field(default_factory=list)  # extra pretrain overrides, key=value


def quickstart_recipe(tile_size: int, method: str, steps: int, batch_size: int = 48,
                      n_tiles: int = 768) -> dict[str, Any]:
    """The pretraining config of the quickstart, for tiles of ``tile_size`` pixels."""
    warmup_epochs = round(0.1 * steps / max(n_tiles // batch_size, 1), 3)  # 10% of the steps
    global_size = min(48, max(12, round(tile_size * 0.75 / 6) * 6))  # 6x6 tokens; CPU cost is fixed
    patch = global_size // 6
    return {
        "name": f"quickstart-{method}",
        "model": {
            "name": "vit_tiny_patch16_224",
            "kwargs": {"patch_size": patch, "embed_dim": 96, "depth": 4, "num_heads": 3},
        },
        "method": quickstart_method(method, global_size),
        "optim": {"lr": 1e-3, "scale_lr_with_batch": False, "warmup_epochs": warmup_epochs,
                  "weight_decay": 0.04, "weight_decay_end": 0.04},
        "train": {"steps": steps, "batch_size": batch_size, "num_workers": 1, "cpus_per_worker": 1.0, "torch_threads": 2,
                  "log_every": 25},
    }


# Mild intensity augmentation: on a few hundred CPU steps, strong gamma/shift jitter kept a
# 4-block ViT from learning anything (measured on the synthetic set).
MILD_AUGMENT = {"gain": [0.8, 1.2], "gamma": [1.0, 1.0], "shift": 0.0, "blur_prob": 0.3, "blur_sigma": [0.1, 1.5],
                "noise_std": 0.02}


def quickstart_method(method: str, global_size: int) -> dict[str, Any]:
    """The ``method`` block of the quickstart recipe: each method sized for a few CPU minutes."""
    if method in ("dino", "channel_agnostic_dino"):
        return {"name": method, **_dino_block(global_size)}
    if method == "ibot":  # DINO's block plus masked-patch distillation; slower centres keep it from collapsing
        return {"name": method, **_dino_block(global_size), "patch_out_dim": 256, "center_momentum": 0.99,
                "patch_center_momentum": 0.99, "teacher_momentum": 0.996, "warmup_teacher_patch_temp": 0.04,
                "teacher_patch_temp": 0.04}
    if method == "mae":
        return {"name": method, "view_size": global_size, "scale": [0.35, 1.0], "mask_ratio": 0.6, "decoder_dim": 96,
                "decoder_depth": 2, "decoder_heads": 3, "augment": {"gamma": [1.0, 1.0], "shift": 0.0}}
    if method == "vicregl":
        return {"name": method, "expander_dims": [512, 512], "local_dims": [128, 128],
                "views": {"global_size": global_size, "global_scale": [0.35, 1.0]}, "augment": MILD_AUGMENT}
    if method in ("simclr", "mpcs"):
        return {"name": method, "view_size": global_size, "scale": [0.35, 1.0], "proj_hidden_dim": 512,
                "proj_dim": 128, "temperature": 0.2, "augment": MILD_AUGMENT}
    raise ValueError(f"quickstart has no CPU recipe for method {method!r} yet; use sslray pretrain with "
                     f"configs/methods/{method}.yaml")


def _dino_block(global_size: int) -> dict[str, Any]:
    return {
        "out_dim": 256,
        "hidden_dim": 512,
        "bottleneck_dim": 128,
        "use_bn": True,
        "warmup_teacher_temp": 0.02,
        "teacher_temp": 0.02,
        "warmup_teacher_temp_epochs": 0,
        "teacher_momentum": 0.99,
        "freeze_last_layer_epochs": 1,
        "views": {"global_size": global_size, "local_size": global_size // 2, "n_local": 2,
                  "global_scale": [0.35, 1.0], "local_scale": [0.1, 0.35]},
        "augment": MILD_AUGMENT,
    }


def quickstart_steps(n_tiles: int, batch_size: int, tile_size: int = 64) -> int:
    """About 40 epochs on small data, capped so a few thousand tiles still finish in time."""
    cap = MAX_STEPS_LARGE_TILES if tile_size > LARGE_TILE else MAX_STEPS_SMALL_TILES
    return int(min(cap, max(300, math.ceil(40 * n_tiles / batch_size))))


def quickstart_batch_size(n_tiles: int) -> int:
    """48, or less for tiny folders so an epoch still holds a few batches."""
    return int(max(2, min(48, n_tiles // 4)))


def default_tile_size(data: str) -> int:
    """224, or the shorter side of the smallest image when the user's tiles are smaller."""
    from sslray.data.ingest import IngestConfig, IngestReport, discover_sources
    from sslray.data.readers import image_size

    sources = discover_sources(IngestConfig(src=data), IngestReport())
    smallest = min((min(image_size(s.path)) for s in sources[:64]), default=USER_TILE)
    return int(min(USER_TILE, smallest))


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    started = time.perf_counter()
    out = Path(storage.local_path(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    _check_tracking(cfg, out)
    store = _ingest(cfg, out)
    pretrain = _pretrain_config(cfg, out, store)
    from sslray.train.ray_train import run_pretrain

    print(f"[sslray] pretraining {cfg.method} for {pretrain.train.steps} steps on {len(store)} tiles", flush=True)
    result = run_pretrain(pretrain)
    if cfg.method in AGGREGATORS:
        tables = _spot_tables(cfg, out, store, result.checkpoint, pretrain)
    else:
        random_ckpt = str(out / "checkpoints" / "random_init")
        save_random_init(pretrain, store, random_ckpt)
        tables = {name: _embed(checkpoint, store, out / "embeddings" / name, pretrain)
                  for name, checkpoint in (("ssl", result.checkpoint), ("random_init", random_ckpt))}
    scores = {}
    for name, table in tables.items():
        evaluated = run_evaluate(
            EvaluateConfig(embeddings=table, out=str(out), name=f"quickstart-probe-{name}",
                           tracking=pretrain.tracking),
            tags={"sslray.encoder": name, "sslray.pretrain_run": result.run_id},
        )
        scores[name] = {k: evaluated[k] for k in ("balanced_accuracy", "macro_auc")}
    summary = {**scores, "tracking_uri": result.tracking_uri, "n_tiles": len(store), "method": cfg.method,
               "checkpoint": result.checkpoint, "steps": result.steps,
               "seconds": round(time.perf_counter() - started, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _embed(checkpoint: str, store: TileStore, out: Path, pretrain: PretrainConfig) -> str:
    return run_embed(EmbedConfig(checkpoint=checkpoint, store=store.url, out=str(out), overwrite=True,
                                 run_dir=str(out.parent.parent), tracking=pretrain.tracking))


def _spot_tables(cfg: QuickstartConfig, out: Path, store: TileStore, checkpoint: str,
                 pretrain: PretrainConfig) -> dict[str, str]:
    """Second level: DINO tile embeddings -> a spot aggregator, against mean pooling of the same tiles.

    The synthetic fields are the spots (2 x 2 tiles each), so the aggregator sees small grids.
    """
    from sslray.aggregate import AggregateConfig, run_aggregate
    from sslray.aggregate.baseline import mean_pool_spots

    tiles = _embed(checkpoint, store, out / "embeddings" / "ssl", pretrain)
    spots = from_dict(AggregateConfig, {
        "embeddings": tiles, "out": str(out / "spots" / "aggregator"), "overwrite": True, "run_dir": str(out),
        "model": {"dim": 64, "depth": 2, "num_heads": 2}, "dino": {"out_dim": 256, "hidden_dim": 128,
                                                                 "bottleneck_dim": 32},
        "views": {"global_window": 2, "local_window": 1, "n_local": 2}, "steps": max(50, (cfg.steps or 300) // 2),
        "batch_size": 32, "tracking": to_dict(pretrain.tracking)})
    return {"aggregator": run_aggregate(spots),
            "mean_pooling": mean_pool_spots(tiles, str(out / "spots" / "mean_pooling"), overwrite=True)}


def _ingest(cfg: QuickstartConfig, out: Path) -> TileStore:
    pairs = cfg.method in METHODS and METHODS.get(cfg.method).needs_pairs  # MPCS: the set at two magnifications
    store_url = str(out / ("store-magnifications" if pairs and cfg.data is None else "store"))
    if storage.is_complete(store_url):
        print(f"[sslray] reusing the tile store {store_url}", flush=True)
        return TileStore.open(store_url)
    if cfg.data is None:
        from sslray.data.synthetic import CHANNELS, SyntheticSpec, write_dataset

        data_dir = out / ("data-magnifications" if pairs else "data")
        labels = write_dataset(data_dir, SyntheticSpec(magnifications=(10, 20) if pairs else None))
        print(f"[sslray] wrote the synthetic cell image set to {data_dir}", flush=True)
        ingest = IngestConfig(src=str(data_dir), dest=store_url, labels=str(labels),
                              tile_size=cfg.tile_size or SYNTHETIC_TILE, channels=list(CHANNELS))
    else:
        tile = cfg.tile_size or default_tile_size(cfg.data)
        ingest = IngestConfig(src=cfg.data, dest=store_url, labels=cfg.labels, tile_size=tile)
    return ingest_folder(ingest)


def _check_tracking(cfg: QuickstartConfig, out: Path) -> None:
    """Inline credentials or a dead tracking server fail now, not after the ingest (docs/security.md)."""
    from sslray.tracking import TrackingConfig, check

    given: dict[str, Any] = {}
    for item in (o for o in cfg.overrides if o.startswith("tracking.")):
        apply_override(given, item)
    check(from_dict(TrackingConfig, given.get("tracking", {}), "tracking"), str(out))


def _pretrain_config(cfg: QuickstartConfig, out: Path, store: TileStore) -> PretrainConfig:
    batch = quickstart_batch_size(len(store))
    steps = cfg.steps or quickstart_steps(len(store), batch, store.info.tile_size)
    tile_method = "dino" if cfg.method in AGGREGATORS else cfg.method  # aggregators read DINO tile embeddings
    recipe = quickstart_recipe(store.info.tile_size, tile_method, steps, batch, len(store))
    recipe.update({"store": store.url, "out": str(out)})
    for item in cfg.overrides:
        apply_override(recipe, item)
    return from_dict(PretrainConfig, recipe)


def save_random_init(cfg: PretrainConfig, store: TileStore, url: str) -> None:
    """The untrained backbone, same seed, saved in the checkpoint format for the baseline."""
    import torch

    from sslray.models.backbones import create_backbone
    from sslray.train.checkpoint import save_checkpoint
    from sslray.train.ray_train import checkpoint_meta, data_facts

    torch.manual_seed(cfg.train.seed)
    facts = data_facts(store, METHODS.get(cfg.method_name).channel_agnostic)
    encoder = create_backbone(cfg.model, facts["in_chans"])
    meta = checkpoint_meta(cfg, facts, int(encoder.num_features))
    save_checkpoint(url, encoder, meta | {"method": "random_init"})
