"""Scores against scikit-learn, the per-fold summary and the basic bootstrap interval."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sslray.evaluate.metrics import (auc, average_by_group, bootstrap_ci, class_probabilities, classification_scores,
                                     group_targets, summarise)


def test_one_logit_is_a_binary_head_and_several_are_a_softmax():
    p = class_probabilities(np.array([[0.0], [2.0]]))
    np.testing.assert_allclose(p[:, 1], [0.5, 1 / (1 + np.exp(-2))])
    q = class_probabilities(np.array([[1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(q, [[1 / 3] * 3])


def test_auc_matches_scikit_learn_binary_and_macro_ovr():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    proba = rng.dirichlet(np.ones(3), 60)
    assert auc(y, proba) == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    yb = rng.integers(0, 2, 40)
    pb = rng.dirichlet(np.ones(2), 40)
    assert auc(yb, pb) == pytest.approx(roc_auc_score(yb, pb[:, 1]))
    assert np.isnan(auc(np.zeros(5, int), pb[:5]))
    scores = classification_scores(yb, pb)
    assert set(scores) == {"auc", "balanced_accuracy", "accuracy"}


def test_patients_average_their_slides_and_keep_one_label():
    keys, mean = average_by_group(np.array([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0]]), np.array(["b", "b", "a"]))
    assert list(keys) == ["a", "b"]
    np.testing.assert_allclose(mean, [[1.0, 0.0], [0.4, 0.6]])
    assert list(group_targets(np.array([1, 1, 0]), np.array(["b", "b", "a"]))) == [0, 1]
    with pytest.raises(ValueError, match="patient 'b' has bags with different labels"):
        group_targets(np.array([1, 0]), np.array(["b", "b"]))


def test_summary_has_mean_sample_sd_folds_and_leaves_nan_out():
    s = summarise([0.8, 0.9, float("nan")], ci95=(0.7, 0.95))
    assert s["mean"] == pytest.approx(0.85) and s["sd"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert len(s["folds"]) == 3 and s["ci95"] == [0.7, 0.95]
    assert summarise([0.5])["sd"] == 0.0


def test_the_basic_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(1)
    values = rng.normal(1.0, 1.0, 400)
    lo, hi = bootstrap_ci(lambda idx: float(values[idx].mean()), len(values), 500, seed=0)
    assert lo < values.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.2)  # the normal-theory width
