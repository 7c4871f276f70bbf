"""Each method's CPU quickstart recipe, read from ``configs/quickstart/<method>.yaml``.

A recipe is data, so a new method joins the quickstart by adding its YAML and nothing here:
the pretraining config written for the default synthetic set, which of its keys follow the
view size, the synthetic set the method needs and an optional second stage. This module sizes a
recipe for the data at hand (view size, steps, batch, warm-up) and knows no method by name.

The sizing targets 2 CPU cores: a 4-block ViT of width 96 working at a fixed 48-px view
resolution (6x6 tokens for global views) whatever the tile size, so the cost per step is fixed,
and a step count that fits the advertised time on the data's size.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sslray.config import ConfigError, from_dict, read_yaml

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "quickstart"
RECIPE_VIEW = 48  # every recipe is written for a 48-px global view (6x6 tokens of 8 px on 64-px tiles)
SMALLEST_VIEW = 12
# Step caps that keep training to ~8 min on 2 cores (measured: ~0.3 s/step on 64-px tiles,
# ~0.45 s/step on 224-px RGB tiles, where reading and cropping the larger tiles costs more).
MAX_STEPS_SMALL_TILES = 1500
MAX_STEPS_LARGE_TILES = 800
LARGE_TILE = 96


@dataclass
class QuickstartRecipe:
    """One ``configs/quickstart/<method>.yaml`` file."""

    pretrain: dict[str, Any] = field(default_factory=dict)  # a PretrainConfig mapping (without store/out)
    view_sized: list[str] = field(default_factory=list)  # dotted keys of ``pretrain`` that scale with the view
    synthetic: dict[str, Any] = field(default_factory=dict)  # SyntheticSpec fields of the default data
    tiles: str | None = None  # a second-level method: the tile recipe whose embeddings it reads
    aggregate: dict[str, Any] | None = None  # the second stage: an AggregateConfig mapping

    def __post_init__(self) -> None:
        if self.tiles is None and not self.pretrain:
            raise ValueError("a quickstart recipe needs a pretrain block, or tiles: NAME (a second-level "
                             "method reading that recipe's tile embeddings)")


def recipe_names() -> list[str]:
    """The methods ``sslray quickstart --method`` accepts."""
    return sorted(path.stem for path in RECIPES.glob("*.yaml"))


def load_recipe(method: str) -> QuickstartRecipe:
    """The recipe of ``method``; a second-level one comes with its tile recipe filled in."""
    path = RECIPES / f"{method}.yaml"
    if not path.is_file():
        raise ConfigError(f"quickstart has no recipe for method {method!r} (known: {', '.join(recipe_names())}); "
                          f"add {path.relative_to(RECIPES.parents[1])}, or train it with sslray pretrain and "
                          f"configs/methods/{method}.yaml")
    try:
        recipe = from_dict(QuickstartRecipe, read_yaml(path))
    except ConfigError as err:
        raise ConfigError(f"{path.name}: {err}") from None
    if recipe.tiles is None:
        return recipe
    tiles = load_recipe(recipe.tiles)
    if recipe.pretrain or tiles.aggregate is not None:
        raise ConfigError(f"{path.name}: tiles: {recipe.tiles} names the whole tile stage, so the recipe has no "
                          f"pretrain block of its own, and {recipe.tiles} must be a tile-level recipe")
    return replace(tiles, tiles=recipe.tiles, aggregate=recipe.aggregate)


def quickstart_recipe(tile_size: int, method: str, steps: int, batch_size: int = 48,
                      n_tiles: int = 768) -> dict[str, Any]:
    """The pretraining config of the quickstart for ``method``, on ``n_tiles`` tiles of ``tile_size`` pixels."""
    return sized_pretrain(load_recipe(method), tile_size, steps, batch_size, n_tiles)


def sized_pretrain(recipe: QuickstartRecipe, tile_size: int, steps: int, batch_size: int,
                   n_tiles: int) -> dict[str, Any]:
    """``recipe.pretrain`` with its view-sized keys scaled to the tiles and its schedule to the data."""
    config = copy.deepcopy(recipe.pretrain)
    view = view_size(tile_size)
    for key in recipe.view_sized:
        *parents, last = key.split(".")
        node = _section(config, parents, key)
        if last not in node:
            raise ConfigError(f"view_sized key {key} is not in the recipe")
        node[last] = int(node[last]) * view // RECIPE_VIEW
    warmup_epochs = round(0.1 * steps / max(n_tiles // batch_size, 1), 3)  # 10% of the steps
    config["train"] = {**config.get("train", {}), "steps": steps, "batch_size": batch_size}
    config["optim"] = {**config.get("optim", {}), "warmup_epochs": warmup_epochs}
    return config


def view_size(tile_size: int) -> int:
    """The global view for ``tile_size``-px tiles: 3/4 of the tile in 6x6 tokens, 12 to 48 px (CPU cost fixed)."""
    return min(RECIPE_VIEW, max(SMALLEST_VIEW, round(tile_size * 0.75 / 6) * 6))


def quickstart_steps(n_tiles: int, batch_size: int, tile_size: int = 64) -> int:
    """About 40 epochs on small data, capped so a few thousand tiles still finish in time."""
    cap = MAX_STEPS_LARGE_TILES if tile_size > LARGE_TILE else MAX_STEPS_SMALL_TILES
    return int(min(cap, max(300, math.ceil(40 * n_tiles / batch_size))))


def quickstart_batch_size(n_tiles: int) -> int:
    """48, or less for tiny folders so an epoch still holds a few batches."""
    return int(max(2, min(48, n_tiles // 4)))


def _section(config: dict[str, Any], parents: list[str], key: str) -> dict[str, Any]:
    node = config
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            raise ConfigError(f"view_sized key {key} is not in the recipe")
    return node
