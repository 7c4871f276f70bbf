"""Every method's CPU quickstart recipe lives in configs/quickstart/ and loads into a valid config."""

import re
from pathlib import Path

import pytest

from sslray.aggregate import AGGREGATORS, AggregateConfig
from sslray.config import ConfigError, from_dict
from sslray.data.synthetic import SyntheticSpec
from sslray.methods import METHODS
from sslray.quickstart import load_recipe, quickstart_recipe, recipe_names
from sslray.quickstart.recipe import sized_pretrain, view_size
from sslray.train.config import PretrainConfig

SRC = Path(__file__).resolve().parents[2] / "sslray"
TILE_METHODS = [name for name in METHODS.names() if name not in AGGREGATORS]


@pytest.mark.parametrize("method", TILE_METHODS)
@pytest.mark.parametrize("tile_size", [24, 64, 224])
def test_every_method_has_a_recipe_that_loads(method, tile_size):
    cfg = from_dict(PretrainConfig, {**quickstart_recipe(tile_size, method, 30, 16, 200), "store": "s"})
    assert cfg.method_name == method and cfg.name == f"quickstart-{method}"
    assert cfg.input_size == view_size(tile_size) and cfg.train.steps == 30 and cfg.train.batch_size == 16
    assert cfg.model.kwargs["patch_size"] * 6 == view_size(tile_size)  # 6x6 tokens whatever the tile


@pytest.mark.parametrize("method", TILE_METHODS)
def test_a_method_on_pairs_gets_a_synthetic_set_with_pairs(method):
    recipe = load_recipe(method)
    from_dict(SyntheticSpec, recipe.synthetic)
    assert bool(recipe.synthetic.get("magnifications")) == METHODS.get(method).needs_pairs


@pytest.mark.parametrize("method", list(AGGREGATORS))
def test_second_level_recipes_read_a_tile_recipe_and_build_their_stage(method):
    recipe = load_recipe(method)
    assert recipe.tiles in METHODS and recipe.pretrain == load_recipe(recipe.tiles).pretrain
    from_dict(AggregateConfig, {**recipe.aggregate, "embeddings": "e", "out": "o"})


def test_every_recipe_is_a_method():
    assert set(recipe_names()) == set(METHODS.names()) and set(AGGREGATORS) <= set(METHODS.names())


def test_view_sized_keys_scale_with_small_tiles():
    recipe = load_recipe("dino")
    views = sized_pretrain(recipe, 32, 10, 8, 64)["method"]["views"]
    assert (views["global_size"], views["local_size"]) == (24, 12)
    assert recipe.pretrain["method"]["views"]["global_size"] == 48  # the recipe itself is untouched


def test_unknown_method_names_the_recipes():
    with pytest.raises(ConfigError, match=r"no recipe for method 'nope' \(known: .*dino.*\)"):
        load_recipe("nope")


def test_quickstart_and_cli_code_name_no_method_but_the_default():
    """A new method needs no branch here: only its module, its configs and its test."""
    names = METHODS.names()
    files = [*(SRC / "quickstart").glob("*.py"), *(SRC / "cli").glob("*.py")]
    files = [f for f in files if f.name != "epilogs.py"]  # --help examples, not logic
    for path in files:
        text = re.sub(r'(default=|= )"dino"', "", path.read_text())
        found = [n for n in names if re.search(rf"\b{n}\b", text)]
        assert not found, f"{path.relative_to(SRC.parent)} names {found}"
