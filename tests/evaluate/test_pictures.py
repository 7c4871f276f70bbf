"""Evaluation pictures: ROC, confusion matrix, embedding maps (UMAP or PCA), and the MIL/tile sets."""

import logging
import sys
import types

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from sslray.evaluate import pictures
from sslray.evaluate.attention_maps import AttentionExample
from sslray.evaluate.bag_table import BagSource, build_bags
from sslray.evaluate.folds import Fold
from sslray.evaluate.mil_results import choose
from sslray.evaluate.pictures import (confusion_matrix_plot, draw_bag_pictures, draw_tile_pictures, embedding_map,
                                      roc_curves, roc_curves_by_model)
from tests.evaluate.bag_fixtures import tile_table


def _png(path) -> Image.Image:
    """The picture at ``path``, checked to be a PNG of a sane size."""
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    image = Image.open(path)
    assert 200 <= image.size[0] <= 4000 and 200 <= image.size[1] <= 4000
    return image


@pytest.fixture
def figures(monkeypatch):
    """The figures the pictures module saves, to read what they show."""
    saved = []
    real = pictures.save_png

    def keep(figure, path, title):
        saved.append(figure)
        return real(figure, path, title)

    monkeypatch.setattr(pictures, "save_png", keep)
    return saved


def _legend(axes) -> list[str]:
    return [t.get_text() for t in axes.get_legend().get_texts()]


def _scores(n=60, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % classes
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[targets]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return targets, proba


def test_binary_roc_is_one_curve_with_its_auc_and_multiclass_one_per_class(tmp_path, figures):
    targets, proba = _scores()
    _png(roc_curves(targets, proba, ["normal", "tumour"], tmp_path / "roc.png", "ROC"))
    (label,) = _legend(figures[0].axes[0])
    assert label == f"tumour vs normal (AUC {roc_auc_score(targets, proba[:, 1]):.3f})"
    targets, proba = _scores(classes=3)
    _png(roc_curves(targets, proba, ["a", "b", "c"], tmp_path / "roc3.png"))
    assert [t.split(" (")[0] for t in _legend(figures[1].axes[0])] == ["a vs rest", "b vs rest", "c vs rest"]
    with pytest.raises(ValueError, match="for 2 classes"):
        roc_curves(targets, proba, ["a", "b"], tmp_path / "bad.png")


def test_roc_by_model_overlays_one_curve_per_model_and_a_panel_per_class_beyond_two(tmp_path, figures):
    curves = {"abmil": _scores(seed=1), "mean_pool": _scores(seed=2)}
    _png(roc_curves_by_model(curves, ["normal", "tumour"], tmp_path / "roc.png"))
    labels = _legend(figures[0].axes[0])
    assert [t.split(" (")[0] for t in labels] == ["abmil", "mean_pool"]
    t, p = curves["mean_pool"]
    assert labels[1].endswith(f"(AUC {roc_auc_score(t, p[:, 1]):.3f})")
    three = {"abmil": _scores(classes=3, seed=1), "dsmil": _scores(classes=3, seed=2)}
    _png(roc_curves_by_model(three, ["a", "b", "c"], tmp_path / "roc3.png"))
    assert len(figures[1].axes) == 3 and all(len(_legend(a)) == 2 for a in figures[1].axes)


def test_the_confusion_matrix_shows_counts_over_row_normalised_colours(tmp_path, figures):
    targets = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 2, 0, 2, 2])
    _png(confusion_matrix_plot(targets, predicted, ["a", "b", "c"], tmp_path / "cm.png"))
    axes = figures[0].axes[0]
    assert [t.get_text() for t in axes.texts] == ["3", "1", "0", "0", "2", "0", "1", "0", "3"]
    shares = np.asarray(axes.images[0].get_array())
    assert np.allclose(shares, [[0.75, 0.25, 0], [0, 1, 0], [0.25, 0, 0.75]])


def test_without_umap_the_map_is_pca_and_says_so(tmp_path, monkeypatch, figures):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap raises ImportError
    features = np.random.default_rng(0).normal(size=(40, 6))
    path = embedding_map(features, {"label": np.arange(40) % 2}, tmp_path / "map.png", title="Tiles")
    assert _png(path).info["Title"] == "Tiles (PCA, 40 points)"
    assert figures[0].axes[0].get_xlabel() == "PCA 1"


def test_with_umap_importable_the_map_is_umap(tmp_path, monkeypatch):
    calls = {}

    class FakeUMAP:
        def __init__(self, **kwargs):
            calls.update(kwargs)

        def fit_transform(self, x):
            return x[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    path = embedding_map(np.random.default_rng(0).normal(size=(30, 4)), {"label": np.zeros(30)},
                         tmp_path / "map.png", seed=3)
    assert "(UMAP, 30 points)" in _png(path).info["Title"] and calls["random_state"] == 3


def test_the_map_subsamples_past_5000_points_and_many_categories_lose_the_legend(tmp_path, monkeypatch, figures):
    monkeypatch.setitem(sys.modules, "umap", None)
    features = np.random.default_rng(0).normal(size=(6000, 3))
    colour_by = {"label": np.arange(6000) % 3, "patient": np.arange(6000) % 50}
    path = embedding_map(features, colour_by, tmp_path / "map.png")
    assert "5000 of 6000 points" in _png(path).info["Title"]
    by_label, by_patient = figures[0].axes
    assert sum(len(c.get_offsets()) for c in by_label.collections) == 5000
    assert len(_legend(by_label)) == 3 and by_patient.get_legend() is None
    again = embedding_map(features, colour_by, tmp_path / "again.png")
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(path)))  # seeded


def _bags(survival=False):
    table, features = tile_table(n_bags=12, dim=4, seed=0, survival=survival)
    return build_bags(table, features, BagSource("tiles", survival=survival))


FOLDS = [Fold(np.arange(6, 12), np.arange(0, 6)), Fold(np.arange(0, 6), np.arange(6, 12))]


def _heads(bags, outputs: dict[str, np.ndarray]):
    """HeadResults whose pooled outer-test outputs are ``outputs[head]`` (one row per bag)."""
    points, results = [], []
    for head, out in outputs.items():
        for k, fold in enumerate(FOLDS):
            points.append({"head": head, "lr": 1e-3, "weight_decay": 0.0, "fold": k})
            results.append({"best_val": 0.5, "best_epoch": 2, "val_curve": [0.5],
                            "test_outputs": out[fold.test].reshape(-1, 1).tolist()})
    return choose(points, results, FOLDS)


def test_classification_draws_roc_the_best_heads_confusion_the_map_and_attention(tmp_path):
    bags = _bags()
    good = np.where(bags.labels == "tumour", 2.0, -2.0)
    heads = _heads(bags, {"mean_pool": -good, "abmil": good})
    example = AttentionExample(str(bags.ids[1]), "tumour", bags.coords[bags.offsets[1]:bags.offsets[2]],
                               np.full(bags.sizes[1], 1 / bags.sizes[1]), "abmil")
    paths = draw_bag_pictures(bags, heads, str(tmp_path), attention={"abmil": [example]})
    names = {p.rsplit("/", 1)[1] for p in paths}
    assert names == {"roc.png", "confusion_abmil.png", "bags_map.png", f"attention_abmil_0_{bags.ids[1]}.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for path in paths:
        _png(path)


def test_survival_draws_kaplan_meier_per_head_skipping_a_head_without_a_median_split(tmp_path, caplog, figures):
    bags = _bags(survival=True)
    heads = _heads(bags, {"abmil": -bags.time, "mean_pool": np.zeros(len(bags))})
    with caplog.at_level(logging.INFO, logger="sslray.evaluate.pictures"):
        paths = draw_bag_pictures(bags, heads, str(tmp_path))
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["bags_map.png", "km_abmil.png"]
    assert "no Kaplan-Meier picture for mean_pool" in caplog.text
    assert [a.get_title() for a in figures[-1].axes] == ["by event", "by patient"]  # the bags map


def test_tile_pictures_are_roc_confusion_and_a_map_by_label_and_group(tmp_path, monkeypatch, figures):
    monkeypatch.setitem(sys.modules, "umap", None)
    targets, proba = _scores(n=30, classes=3)
    features = np.random.default_rng(0).normal(size=(90, 5))
    paths = draw_tile_pictures(features, np.arange(90) % 3, np.arange(90) % 4, targets, proba, ["a", "b", "c"],
                               str(tmp_path), prefix="probe_")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["probe_roc.png", "probe_confusion.png", "probe_embedding_map.png"]
    for path in paths:
        _png(path)
    assert [a.get_title() for a in figures[2].axes] == ["by label", "by group"]
