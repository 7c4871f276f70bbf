"""``sslray quickstart``: the whole pipeline on CPU in minutes, from a per-method recipe.

``pipeline`` runs it, ``recipe`` reads and sizes ``configs/quickstart/<method>.yaml``, ``summary``
is the typed ``summary.json``.
"""

from sslray.quickstart.pipeline import QuickstartConfig, default_tile_size, run_quickstart, save_random_init
from sslray.quickstart.recipe import (
    QuickstartRecipe,
    load_recipe,
    quickstart_batch_size,
    quickstart_recipe,
    quickstart_steps,
    recipe_names,
)
from sslray.quickstart.summary import ProbeScores, QuickstartSummary

__all__ = [
    "ProbeScores",
    "QuickstartConfig",
    "QuickstartRecipe",
    "QuickstartSummary",
    "default_tile_size",
    "load_recipe",
    "quickstart_batch_size",
    "quickstart_recipe",
    "quickstart_steps",
    "recipe_names",
    "run_quickstart",
    "save_random_init",
]
