"""MIL attention pictures: the fold-0 refit, one weight per tile of the whole bag, and the heat map."""

import numpy as np
import pytest
from PIL import Image

from sslray.evaluate import attention_maps
from sslray.evaluate.attention_maps import (AttentionExample, attention_examples, attention_grid, pick_bags,
                                            plot_attention)
from sslray.evaluate.bag_table import BagSource, build_bags
from sslray.evaluate.folds import bag_folds
from sslray.evaluate.mil_results import HeadResult, OuterFold
from sslray.evaluate.mil_train import TrainSettings
from tests.evaluate.bag_fixtures import tile_table

OPTIONS = {"transmil": {"dim": 16, "heads": 2}, "abmil": {"hidden": 16, "mlp_hidden": (16,)}}


@pytest.fixture(scope="module")
def bags():
    table, features = tile_table(n_bags=16, dim=4, seed=2)
    return build_bags(table, features, BagSource("tiles"))


@pytest.fixture(scope="module")
def folds(bags):
    return bag_folds(bags, 2, 2, 0, "tiles")


def _result(folds, lr=1e-2, weight_decay=1e-4, epochs=2):
    test = folds[0].test
    return HeadResult([OuterFold(0, {"lr": lr, "weight_decay": weight_decay}, epochs, 0.9, test,
                                 np.zeros((len(test), 1)))])


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        return image.size


@pytest.mark.parametrize("head", ["abmil", "dsmil", "transmil", "chowder"])
def test_every_attention_head_gives_one_finite_weight_per_tile_of_the_whole_bag(bags, folds, head):
    base = TrainSettings(head="mean_pool", max_tiles=3, head_options=OPTIONS.get(head, {}))  # training sees 3
    examples = attention_examples(bags, folds, _result(folds), head, base, n_bags=3)
    assert len(examples) == 3
    for example in examples:
        i = int(np.flatnonzero(bags.ids == example.bag_id)[0])
        assert example.weights.shape == (bags.sizes[i],) and np.isfinite(example.weights).all()
        assert np.array_equal(example.coords, bags.coords[bags.offsets[i]:bags.offsets[i + 1]])
        assert example.head == head and example.label == bags.labels[i]
        if head in ("abmil", "dsmil", "transmil"):
            assert example.weights.sum() == pytest.approx(1.0, abs=1e-5) and (example.weights >= 0).all()


def test_the_refit_uses_fold_0s_chosen_parameters_epochs_and_the_heads_options(bags, folds, monkeypatch):
    seen = {}
    real_train = attention_maps.train

    def spy(bags_, targets, train_idx, settings, epochs, watch=None):
        seen.update(settings=settings, epochs=epochs, train=train_idx)
        return real_train(bags_, targets, train_idx, settings, epochs, watch)

    monkeypatch.setattr(attention_maps, "train", spy)
    base = TrainSettings(head="mean_pool", lr=1.0, head_options={"hidden": 8})
    attention_examples(bags, folds, _result(folds, lr=3e-3, weight_decay=1e-5, epochs=4), "abmil", base)
    settings = seen["settings"]
    assert (settings.head, settings.lr, settings.weight_decay, seen["epochs"]) == ("abmil", 3e-3, 1e-5, 4)
    assert settings.head_options == {"hidden": 8} and np.array_equal(seen["train"], folds[0].train)


def test_positive_bags_come_first_and_survival_puts_events_first(bags, folds):
    test = folds[0].test
    picked = pick_bags(bags, test, len(test))
    positive = bags.labels[picked] == "tumour"
    assert sorted(picked) == sorted(test) and positive[:positive.sum()].all()
    assert len(pick_bags(bags, test, 2)) == 2
    table, features = tile_table(n_bags=12, dim=4, seed=2, survival=True)
    survival = build_bags(table, features, BagSource("tiles", survival=True))
    order = pick_bags(survival, np.arange(12), 12)
    assert survival.event[order][:survival.event.sum()].all()


def test_a_bag_past_the_tile_cap_shows_a_seeded_subsample_with_its_coordinates(bags, folds, monkeypatch):
    monkeypatch.setattr(attention_maps, "MAX_ATTENTION_TILES", 5)
    first = attention_examples(bags, folds, _result(folds), "abmil", TrainSettings(head="abmil"), n_bags=2)
    again = attention_examples(bags, folds, _result(folds), "abmil", TrainSettings(head="abmil"), n_bags=2)
    for a, b in zip(first, again):
        i = int(np.flatnonzero(bags.ids == a.bag_id)[0])
        assert a.weights.shape == (5,) and np.array_equal(a.coords, b.coords)
        bag_coords = {tuple(c) for c in bags.coords[bags.offsets[i]:bags.offsets[i + 1]]}
        assert {tuple(c) for c in a.coords} <= bag_coords


def test_quadratic_attention_shows_fewer_tiles(bags, folds, monkeypatch):
    monkeypatch.setattr(attention_maps, "MAX_QUADRATIC_TILES", 4)
    settings = TrainSettings(head="transmil", head_options={"dim": 16, "heads": 2})
    (example,) = attention_examples(bags, folds, _result(folds), "transmil", settings, n_bags=1)
    assert example.weights.shape == (4,)
    (other,) = attention_examples(bags, folds, _result(folds), "abmil", TrainSettings(head="abmil"), n_bags=1)
    assert other.weights.shape[0] > 4


def test_the_heat_map_puts_each_weight_at_its_tile_with_y_downward():
    coords = np.array([[0, 0], [224, 0], [448, 0], [0, 224], [448, 448]], dtype=float)  # pixel coordinates
    weights = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    grid, extent = attention_grid(coords, weights)
    assert grid.shape == (3, 3)  # rows are y, columns x, one cell per tile step
    assert grid[0, 1] == 0.2 and grid[1, 0] == 0.4 and grid[2, 2] == 0.0 and np.isnan(grid[1, 1])
    assert extent == (-112.0, 560.0, 560.0, -112.0)  # bottom > top: y grows downward as in the image


def test_a_peaked_and_a_uniform_attention_draw_different_heat_maps(tmp_path):
    coords = np.array([[x, y] for y in range(4) for x in range(4)], dtype=float)
    peaked = np.zeros(16)
    peaked[5] = 1.0
    paths = [plot_attention(AttentionExample("s1", "tumour", coords, w, "abmil"), tmp_path / f"{k}.png")
             for k, w in enumerate([peaked, np.full(16, 1 / 16)])]
    sizes = [_png_size(p) for p in paths]
    assert sizes[0] == sizes[1] and 300 <= sizes[0][0] <= 2000 and 300 <= sizes[0][1] <= 2000
    pixels = [np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3) for p in paths]
    colours = [{tuple(c) for c in px} for px in pixels]
    assert not np.array_equal(pixels[0], pixels[1]) and colours[0] - colours[1]


def test_without_coordinates_the_sorted_weights_are_plotted(tmp_path):
    example = AttentionExample("bag/7", None, None, np.random.default_rng(0).dirichlet(np.ones(30)))
    path = plot_attention(example, tmp_path / "sorted.png")
    width, height = _png_size(path)
    assert 300 <= width <= 2000 and 300 <= height <= 2000
    assert "bag/7" in Image.open(path).info["Title"]
