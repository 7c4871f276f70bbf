"""Tile-level scores: MPCS's image- and patient-level accuracy on a hand-made example, bootstrap intervals
that resample whole patients, and the results.json / MLflow shapes."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from sslray.evaluate.tile_scores import (
    TilePredictions,
    _Resampler,
    accuracy_by_group,
    balanced_accuracy,
    bootstrap_intervals,
    logged_metrics,
    scored_model,
    tile_scores,
)


def _proba(predicted: list[int], n_classes: int = 2) -> np.ndarray:
    return np.eye(n_classes)[predicted] * 0.8 + 0.1


def _hand_made() -> TilePredictions:
    """Patient p1: image i1 (1 of 2 tiles right), image i2 (2 of 2 right); patient p2: image i3 (0 of 1)."""
    targets = np.array([0, 0, 1, 1, 0])
    predicted = [0, 1, 1, 1, 1]
    return TilePredictions(targets, _proba(predicted), images=np.array(["i1", "i1", "i2", "i2", "i3"]),
                           patients=np.array(["p1", "p1", "p1", "p1", "p2"]))


def test_image_and_patient_accuracy_average_per_image_and_per_patient():
    scores = tile_scores(_hand_made())
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["image_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert scores["patient_accuracy"] == pytest.approx((3 / 4 + 0.0) / 2)
    assert scores["balanced_accuracy"] == pytest.approx((1 / 3 + 2 / 2) / 2)
    assert accuracy_by_group(np.array([True, False, True]), np.array(["a", "a", "b"])) == pytest.approx(0.75)


def test_without_patients_there_are_no_group_scores_and_without_images_image_accuracy_is_tile_accuracy():
    pred = _hand_made()
    assert set(tile_scores(TilePredictions(pred.targets, pred.proba, images=pred.images))) == {
        "balanced_accuracy", "macro_auc", "accuracy"}
    no_images = tile_scores(TilePredictions(pred.targets, pred.proba, patients=pred.patients))
    assert no_images["image_accuracy"] == no_images["accuracy"] == pytest.approx(0.6)


def _clustered(n_patients: int = 10, tiles: int = 20) -> TilePredictions:
    """Each patient's tiles are all right (6 patients) or all wrong (4): accuracy 0.6."""
    right = np.repeat(np.arange(n_patients) < 6, tiles)
    targets = np.tile([0, 1], n_patients * tiles // 2)
    predicted = np.where(right, targets, 1 - targets)
    return TilePredictions(targets, _proba(predicted), patients=np.repeat(np.arange(n_patients), tiles))


def test_the_bootstrap_interval_contains_the_estimate_and_is_reproducible():
    pred = _clustered()
    intervals = bootstrap_intervals(pred, pred.patients, 200, seed=1)
    scores = tile_scores(pred)
    for name, (low, high) in intervals.items():
        assert low <= scores[name] <= high, name
    assert intervals == bootstrap_intervals(pred, pred.patients, 200, seed=1)


def test_resampling_whole_patients_widens_the_interval_of_correlated_tiles():
    pred = _clustered()
    by_patient = bootstrap_intervals(pred, pred.patients, 300, seed=0)["accuracy"]
    by_tile = bootstrap_intervals(pred, None, 300, seed=0)["accuracy"]
    assert by_patient[1] - by_patient[0] > 2.5 * (by_tile[1] - by_tile[0])


def test_a_patient_drawn_twice_counts_as_two_patients():
    pred = _hand_made()
    drawn = _Resampler(pred, pred.patients)(np.array([1, 1, 0]))  # p2 twice, then p1
    assert list(drawn.targets) == [0, 0, 0, 0, 1, 1]
    assert len(set(drawn.patients)) == 3 and len(set(drawn.images)) == 4
    assert tile_scores(drawn)["patient_accuracy"] == pytest.approx((0 + 0 + 3 / 4) / 3)


def test_scored_model_is_a_results_entry_with_intervals_only_when_asked():
    pred = _clustered()
    scores, entry = scored_model(pred, pred.patients, 50, 0, {"C": 1.0})
    assert entry["best_params"] == {"C": 1.0} and entry["accuracy"]["mean"] == scores["accuracy"]
    assert entry["accuracy"]["folds"] == [scores["accuracy"]] and len(entry["patient_accuracy"]["ci95"]) == 2
    _, plain = scored_model(pred, pred.patients, 0, 0, {"C": 1.0})
    assert "ci95" not in plain["accuracy"]


def test_logged_metrics_flatten_an_entry_and_drop_what_is_not_finite():
    entry = {"accuracy": {"mean": 0.5, "sd": 0.1, "folds": [0.4, 0.6]},
             "macro_auc": {"mean": float("nan"), "sd": 0.0, "folds": [float("nan")]},
             "balanced_accuracy": {"mean": 0.7, "sd": 0.0, "folds": [0.7], "ci95": [0.6, 0.8]},
             "best_params": {"C": 1.0}}
    assert logged_metrics(entry, "t/") == {"t/accuracy": 0.5, "t/accuracy_sd": 0.1, "t/balanced_accuracy": 0.7,
                                           "t/balanced_accuracy_ci95_low": 0.6,
                                           "t/balanced_accuracy_ci95_high": 0.8}


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(3))
def test_balanced_accuracy_is_scikit_learns_even_when_a_class_is_predicted_but_absent(seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 3, 50)  # class 3 never a target, but predicted
    proba = rng.random((50, 4))
    expected = balanced_accuracy_score(targets, proba.argmax(1))
    assert balanced_accuracy(TilePredictions(targets, proba)) == pytest.approx(expected)
