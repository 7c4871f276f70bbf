"""``sslray quickstart --profiling``: a synthetic Cell Painting screen profiled with SSL and with random init.

The screen (``sslray.data.synthetic_screen``: plates in two batches, DMSO wells, compounds in MoAs
whose effect is morphology) is written as JUMP names its files and ingested as
``configs/ingest/cell_painting.yaml`` says, so the quickstart reads it the way a user's screen is
read. The method is pretrained on its tiles, the teacher and the untrained backbone embed them,
``sslray profile`` turns each table into normalised well profiles and ``sslray evaluate
--protocol profiling`` scores them. ``summary.json`` carries both encoders' metrics under the
names of the protocol's ``results.json`` and their difference, so it says whether self-supervision
learned the screen's biology rather than its brightness.

What runs is ``configs/quickstart/profiling/recipe.yaml`` (method, screen size, pretraining
overrides on the method's own quickstart recipe, profile and protocol settings); the stages are
the quickstart's (``sslray.quickstart.pipeline``), under one MLflow parent run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslray import storage
from sslray.artifacts.tile_store import TileStore
from sslray.config import apply_override, from_dict, read_yaml, to_dict
from sslray.credentials import redact_url
from sslray.quickstart.pipeline import (
    QuickstartConfig,
    embed_with,
    pretrain_config,
    quickstart_tracking,
    save_random_init,
)
from sslray.quickstart.recipe import RECIPES, load_recipe
from sslray.stage import pipeline_run
from sslray.train.config import PretrainConfig

PROFILING_RECIPE = RECIPES / "profiling" / "recipe.yaml"
INGEST_CONFIG = RECIPES.parent / "ingest" / "cell_painting.yaml"
ENCODERS = ("ssl", "random_init")
HEADLINE = ("nsb_accuracy", "map_replicates", "map_moa")
# Override prefixes that go to the screen, the profile stage and the protocol; the rest pretrain.
STAGE_PREFIXES = ("screen.", "profile.", "evaluate.")


@dataclass
class ProfilingRecipe:
    """``configs/quickstart/profiling/recipe.yaml``."""

    method: str
    screen: dict[str, Any] = field(default_factory=dict)  # ScreenSpec fields
    tile_size: int = 64
    overrides: list[str] = field(default_factory=list)  # pretrain overrides on the method's quickstart recipe
    profile: dict[str, Any] = field(default_factory=dict)  # ProfileConfig keys
    evaluate: dict[str, Any] = field(default_factory=dict)  # the profiling protocol's config keys


@dataclass
class ProfilingQuickstartConfig:
    method: str | None = None  # default: the recipe's
    run_dir: str = "sslray-quickstart-profiling"
    steps: int | None = None  # default: scaled with the data, as the quickstart does
    # key=value: screen.*, profile.*, evaluate.* go to those stages, anything else to pretraining
    overrides: list[str] = field(default_factory=list)


@dataclass
class ProfilingSummary:
    scores: dict[str, dict[str, Any]]  # encoder -> metric -> value (or per-q / per-k map), as results.json names them
    tracking_uri: str
    n_tiles: int
    n_wells: int
    method: str
    checkpoint: str
    steps: int
    seconds: float

    def __post_init__(self) -> None:
        self.tracking_uri = redact_url(self.tracking_uri)  # printed and written: never a credential

    def difference(self) -> dict[str, float]:
        """SSL minus random init, for every single-number metric both encoders have."""
        ours, base = self.scores["ssl"], self.scores["random_init"]
        return {k: round(ours[k] - base[k], 4) for k in ours if isinstance(ours[k], float) and k in base}

    def to_json(self) -> dict[str, Any]:
        facts = {k: getattr(self, k) for k in ("tracking_uri", "n_tiles", "n_wells", "method", "checkpoint", "steps",
                                                "seconds")}
        return {**self.scores, "difference": self.difference(), **facts}

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))

    def headline(self) -> str:
        ours, base = self.scores["ssl"], self.scores["random_init"]
        shown = [k for k in HEADLINE if k in ours and k in base]
        return "profiling: " + ", ".join(f"{k} ssl {ours[k]:.3f} vs random_init {base[k]:.3f}" for k in shown)


def load_profiling_recipe(path: Path = PROFILING_RECIPE) -> ProfilingRecipe:
    return from_dict(ProfilingRecipe, read_yaml(path), path.name)


def split_overrides(overrides: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``screen.sites=1`` -> ``{"screen": {"sites": 1}}``; overrides of no stage prefix are pretraining's."""
    stages: dict[str, dict[str, Any]] = {prefix.rstrip("."): {} for prefix in STAGE_PREFIXES}
    pretrain = []
    for item in overrides:
        if item.startswith(STAGE_PREFIXES):
            apply_override(stages, item)
        else:
            pretrain.append(item)
    return stages, pretrain


def run_profiling_quickstart(cfg: ProfilingQuickstartConfig) -> ProfilingSummary:
    """Every stage under one MLflow parent run (``quickstart profiling``), each a run nested in it."""
    started = time.perf_counter()
    recipe = load_profiling_recipe()
    stages, pretrain_overrides = split_overrides(cfg.overrides)
    method = cfg.method or recipe.method
    quick = QuickstartConfig(method=method, run_dir=cfg.run_dir, steps=cfg.steps,
                             overrides=[*recipe.overrides, *pretrain_overrides])
    method_recipe = load_recipe(method)  # an unknown method fails before any work
    out = Path(storage.local_path(cfg.run_dir))
    out.mkdir(parents=True, exist_ok=True)
    with pipeline_run(quickstart_tracking(quick), str(out), name="quickstart", input="profiling",
                      config={**to_dict(cfg), "method": method}) as run:
        store, plate_map = _screen_store(recipe, stages["screen"], out)
        pretrain = pretrain_config(quick, method_recipe, out, store)
        from sslray.train.driver import run_pretrain

        print(f"[sslray] pretraining {method} for {pretrain.train.steps} steps on {len(store)} tiles", flush=True)
        result = run_pretrain(pretrain)
        random_ckpt = str(out / "checkpoints" / "random_init")
        save_random_init(pretrain, store, random_ckpt)
        scores, n_wells = {}, 0
        for name, checkpoint in zip(ENCODERS, (result.checkpoint, random_ckpt)):
            table = embed_with(checkpoint, store, out / "embeddings" / name, pretrain)
            profiles = _profile(table, name, plate_map, out, pretrain, {**recipe.profile, **stages["profile"]})
            scores[name] = _score(profiles, name, out, pretrain, {**recipe.evaluate, **stages["evaluate"]})
            n_wells = _n_wells(profiles)
        summary = ProfilingSummary(scores=scores, tracking_uri=result.tracking_uri, n_tiles=len(store),
                                   n_wells=n_wells, method=method, checkpoint=result.checkpoint, steps=result.steps,
                                   seconds=round(time.perf_counter() - started, 1))
        summary.write(out / "summary.json")
        run.log_json(summary.to_json(), "summary.json")
    return summary


def _screen_store(recipe: ProfilingRecipe, screen: dict[str, Any], out: Path) -> tuple[TileStore, str]:
    """The screen written and ingested once (a rerun with the same ``--out`` reuses both)."""
    from sslray.data.ingest import IngestConfig, ingest_folder
    from sslray.data.synthetic_screen import ScreenSpec, write_screen

    data, store_url = out / "screen", str(out / "store-screen")
    plate_map = str(data / "platemap.csv")
    if storage.is_complete(store_url):
        print(f"[sslray] reusing the tile store {store_url}", flush=True)
        return TileStore.open(store_url), plate_map
    write_screen(data, from_dict(ScreenSpec, {**recipe.screen, **screen}, "screen"))
    print(f"[sslray] wrote the synthetic Cell Painting screen to {data}", flush=True)
    ingest = {**read_yaml(INGEST_CONFIG), "src": str(data), "out": store_url, "tile_size": recipe.tile_size,
              "overwrite": True}
    return ingest_folder(from_dict(IngestConfig, ingest, INGEST_CONFIG.name)), plate_map


def _profile(table: str, name: str, plate_map: str, out: Path, pretrain: PretrainConfig,
             settings: dict[str, Any]) -> str:
    from sslray.profile.config import ProfileConfig
    from sslray.profile.run import run_profile

    config = {**settings, "embeddings": table, "metadata": plate_map, "out": str(out / "profiles" / name),
              "name": name, "overwrite": True, "run_dir": str(out), "tracking": to_dict(pretrain.tracking)}
    return run_profile(from_dict(ProfileConfig, config, "profile"))


def _n_wells(profiles: str) -> int:
    return int(storage.read_json(storage.join(profiles, storage.SUCCESS_MARKER))["n_wells"])


def _score(profiles: str, name: str, out: Path, pretrain: PretrainConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """The profiling protocol's metrics of ``profiles``, under the names of its results.json."""
    from sslray.evaluate.protocols import get_protocol

    protocol = get_protocol("profiling")
    config = {**settings, "embeddings": profiles, "run_dir": str(out), "name": name,
              "tracking": to_dict(pretrain.tracking)}
    return numbers(protocol.run(from_dict(protocol.Config, config, "evaluate"))["metrics"])


def numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics that are numbers, or maps of numbers (per quantile, per k), rounded to 4 places."""
    kept: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, int | float):
            kept[key] = round(float(value), 4)
        elif isinstance(value, dict) and all(isinstance(v, int | float) for v in value.values()):
            kept[key] = {str(k): round(float(v), 4) for k, v in value.items()}
    return kept
