"""``sslray quickstart``: ingest -> pretrain -> embed -> evaluate in one go, on CPU.

With no data it writes the deterministic synthetic cell set (``sslray.data.synthetic``).
The same backbone, untrained, goes through the same embed + probe path as a baseline, so
``summary.json`` says whether self-supervision learned anything. What each method trains is its
recipe (``configs/quickstart/<method>.yaml``, sized by ``sslray.quickstart.recipe``); this module
runs any recipe the same way. Larger tiles are downsampled into the views; on a GPU use a real
recipe (configs/methods/).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sslray import storage
from sslray.artifacts.tile_store import TileStore
from sslray.config import apply_override, from_dict, to_dict
from sslray.data.ingest import IngestConfig, ingest_folder
from sslray.evaluate.run import EvaluateConfig, run_evaluate
from sslray.infer.embed import EmbedConfig, run_embed
from sslray.methods import METHODS
from sslray.quickstart.recipe import (
    QuickstartRecipe,
    load_recipe,
    quickstart_batch_size,
    quickstart_steps,
    sized_pretrain,
)
from sslray.quickstart.summary import ProbeScores, QuickstartSummary
from sslray.stage import pipeline_run
from sslray.tracking import TrackingConfig
from sslray.train.config import PretrainConfig

SYNTHETIC_TILE = 64
USER_TILE = 224


@dataclass
class QuickstartConfig:
    data: str | None = None
    labels: str | None = None
    bags: str | None = None  # with --data: a bags CSV (bag_id,label[,patient_id]) for slide-level MIL
    method: str = "dino"
    run_dir: str = "sslray-quickstart"  # everything: store, checkpoints, tables, MLflow store, summary.json
    tile_size: int | None = None  # default: 64 for the synthetic set, 224 for user data
    steps: int | None = None  # default: scaled with the data (see quickstart_steps)
    overrides: list[str] = field(default_factory=list)  # extra pretrain overrides, key=value

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out": "run_dir"}

    def __post_init__(self) -> None:
        if self.bags is not None and self.data is None:
            raise ValueError("--bags names the slides of your --data; the synthetic set composes its own slides")


def default_tile_size(data: str) -> int:
    """224, or the shorter side of the smallest image when the user's tiles are smaller."""
    from sslray.data.ingest import IngestReport, discover_sources
    from sslray.data.readers import image_size

    sources = discover_sources(IngestConfig(src=data), IngestReport())
    smallest = min((min(image_size(s.path)) for s in sources[:64]), default=USER_TILE)
    return int(min(USER_TILE, smallest))


def run_quickstart(cfg: QuickstartConfig) -> QuickstartSummary:
    """Every stage in one MLflow parent run (``quickstart METHOD``), each stage a run nested in it."""
    started = time.perf_counter()
    recipe = load_recipe(cfg.method)  # an unknown method fails before any work
    out = Path(storage.local_path(cfg.run_dir))
    out.mkdir(parents=True, exist_ok=True)
    # inline credentials or a dead tracking server fail now, not after the ingest (docs/security.md)
    with pipeline_run(quickstart_tracking(cfg), str(out), name="quickstart", input=cfg.method,
                      config=to_dict(cfg)) as run:
        summary = _stages(cfg, recipe, out)
        summary.seconds = round(time.perf_counter() - started, 1)
        summary.write(out / "summary.json")
        run.log_json(summary.to_json(), "summary.json")
    return summary


def _stages(cfg: QuickstartConfig, recipe: QuickstartRecipe, out: Path) -> QuickstartSummary:
    store = _ingest(cfg, recipe, out)
    pretrain = pretrain_config(cfg, recipe, out, store)
    from sslray.train.driver import run_pretrain

    print(f"[sslray] pretraining {pretrain.method_name} for {pretrain.train.steps} steps on {len(store)} tiles",
          flush=True)
    result = run_pretrain(pretrain)
    if recipe.aggregate is not None:
        tables = _spot_tables(cfg, recipe, out, store, result.checkpoint, pretrain)
    else:
        random_ckpt = str(out / "checkpoints" / "random_init")
        save_random_init(pretrain, store, random_ckpt)
        tables = {name: embed_with(checkpoint, store, out / "embeddings" / name, pretrain)
                  for name, checkpoint in (("ssl", result.checkpoint), ("random_init", random_ckpt))}
    (model, ours), (baseline, base) = [(name, _probe(table, name, out, pretrain, result.run_id))
                                       for name, table in tables.items()]
    mil = _slide_level(cfg, recipe, tables, out, pretrain)
    return QuickstartSummary(model=model, scores=ours, baseline=baseline, baseline_scores=base,
                             tracking_uri=result.tracking_uri, n_tiles=len(store), method=cfg.method,
                             checkpoint=result.checkpoint, steps=result.steps, seconds=0.0, mil=mil)


def _slide_level(cfg: QuickstartConfig, recipe: QuickstartRecipe, tables: dict[str, str], out: Path,
                 pretrain: PretrainConfig) -> dict[str, dict[str, float]] | None:
    """MIL on slides: the synthetic slides with a focus (default data), or the user's with ``--bags``."""
    if recipe.aggregate is not None or (cfg.data is not None and cfg.bags is None):
        return None
    from sslray.evaluate.mil import MILConfig, run_bag_protocol
    from sslray.quickstart.slides import MIL_SETTINGS, compose_slides

    scores = {}
    for name, table in tables.items():
        if cfg.data is None:
            table = compose_slides(table, str(out / "slides" / name))
        print(f"[sslray] slide-level MIL on the {name} embeddings", flush=True)
        mil = MILConfig(embeddings=table, bags=cfg.bags, run_dir=str(out), name=f"{name}_slides", tracking=pretrain.tracking,
                        **MIL_SETTINGS)
        scores[name] = {k: round(v, 4) for k, v in run_bag_protocol(mil).items()
                        if k.endswith(("/auc", "/balanced_accuracy"))}
    return scores


def _probe(table: str, name: str, out: Path, pretrain: PretrainConfig, pretrain_run: str) -> ProbeScores:
    evaluated = run_evaluate(
        EvaluateConfig(embeddings=table, run_dir=str(out), name=name, tracking=pretrain.tracking),
        tags={"sslray.encoder": name, "sslray.pretrain_run": pretrain_run},
    )
    return ProbeScores(balanced_accuracy=evaluated["balanced_accuracy"], macro_auc=evaluated["macro_auc"])


def embed_with(checkpoint: str, store: TileStore, out: Path, pretrain: PretrainConfig) -> str:
    """The store embedded by one of the quickstart's encoders, tracked as the pretraining run is."""
    return run_embed(EmbedConfig(checkpoint=checkpoint, store=store.url, out=str(out), overwrite=True,
                                 run_dir=str(out.parent.parent), tracking=pretrain.tracking))


def _spot_tables(cfg: QuickstartConfig, recipe: QuickstartRecipe, out: Path, store: TileStore, checkpoint: str,
                 pretrain: PretrainConfig) -> dict[str, str]:
    """Second level: tile embeddings -> the recipe's aggregator, against mean pooling of the same tiles."""
    from sslray.aggregate import AggregateConfig, run_aggregate
    from sslray.aggregate.baseline import mean_pool_spots

    tiles = embed_with(checkpoint, store, out / "embeddings" / "ssl", pretrain)
    stage = dict(recipe.aggregate or {})
    if cfg.steps:  # a short tile run gets a short second stage
        stage["steps"] = max(50, cfg.steps // 2)
    spots = from_dict(AggregateConfig, {**stage, "embeddings": tiles, "out": str(out / "spots" / "aggregator"),
                                        "overwrite": True, "run_dir": str(out), "tracking": to_dict(pretrain.tracking)})
    return {"aggregator": run_aggregate(spots),
            "mean_pooling": mean_pool_spots(tiles, str(out / "spots" / "mean_pooling"), overwrite=True)}


def _ingest(cfg: QuickstartConfig, recipe: QuickstartRecipe, out: Path) -> TileStore:
    variant = "".join(f"-{key}" for key in sorted(recipe.synthetic)) if cfg.data is None else ""
    store_url = str(out / f"store{variant}")  # e.g. store-magnifications: the set at two magnifications
    if storage.is_complete(store_url):
        print(f"[sslray] reusing the tile store {store_url}", flush=True)
        return TileStore.open(store_url)
    if cfg.data is None:
        from sslray.data.synthetic import CHANNELS, SyntheticSpec, write_dataset

        data_dir = out / f"data{variant}"
        labels = write_dataset(data_dir, from_dict(SyntheticSpec, recipe.synthetic, "synthetic"))
        print(f"[sslray] wrote the synthetic cell image set to {data_dir}", flush=True)
        ingest = IngestConfig(src=str(data_dir), out=store_url, labels=str(labels),
                              tile_size=cfg.tile_size or SYNTHETIC_TILE, channels=list(CHANNELS))
    else:
        tile = cfg.tile_size or default_tile_size(cfg.data)
        ingest = IngestConfig(src=cfg.data, out=store_url, labels=cfg.labels, tile_size=tile)
    return ingest_folder(ingest)


def quickstart_tracking(cfg: QuickstartConfig) -> TrackingConfig:
    """The tracking settings among the pretrain overrides: the pipeline run logs where the stages do."""
    given: dict[str, Any] = {}
    for item in (o for o in cfg.overrides if o.startswith("tracking.")):
        apply_override(given, item)
    return from_dict(TrackingConfig, given.get("tracking", {}), "tracking")


def pretrain_config(cfg: QuickstartConfig, recipe: QuickstartRecipe, out: Path, store: TileStore) -> PretrainConfig:
    batch = quickstart_batch_size(len(store))
    steps = cfg.steps or quickstart_steps(len(store), batch, store.info.tile_size)
    config = sized_pretrain(recipe, store.info.tile_size, steps, batch, len(store))
    config.update({"store": store.url, "run_dir": str(out)})
    for item in cfg.overrides:
        apply_override(config, item)
    return from_dict(PretrainConfig, config)


def save_random_init(cfg: PretrainConfig, store: TileStore, url: str) -> None:
    """The untrained backbone, same seed, saved in the checkpoint format for the baseline."""
    import torch

    from sslray.artifacts.checkpoint import save_checkpoint
    from sslray.artifacts.checkpoint_meta import DataFacts
    from sslray.models.backbones import create_backbone
    from sslray.train.plan import checkpoint_meta

    torch.manual_seed(cfg.train.seed)
    facts = DataFacts.of(store, METHODS.get(cfg.method_name).channel_agnostic)
    encoder = create_backbone(cfg.model, facts.in_chans)
    save_checkpoint(url, encoder, checkpoint_meta(cfg, facts, int(encoder.num_features), method="random_init"))
