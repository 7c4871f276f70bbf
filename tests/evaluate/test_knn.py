"""Weighted kNN (DINO's): against a brute-force loop, against scikit-learn's uniform kNN, and its refusals."""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from sslray.evaluate.knn import knn_proba


def _data(n_train: int = 60, n_test: int = 25, dim: int = 5, n_classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    train_y = rng.integers(0, n_classes, n_train)
    centres = rng.normal(size=(n_classes, dim)) * 2
    train_x = centres[train_y] + rng.normal(size=(n_train, dim))
    test_x = centres[rng.integers(0, n_classes, n_test)] + rng.normal(size=(n_test, dim))
    return train_x, train_y, test_x


def _brute_force(train_x, train_y, test_x, k, temperature, n_classes):
    """The definition, one test row at a time."""
    out = np.zeros((len(test_x), n_classes))
    for i, row in enumerate(test_x):
        sims = [float(row @ t / np.linalg.norm(row) / np.linalg.norm(t)) for t in train_x]
        for j in np.argsort(sims)[::-1][:k]:
            out[i, train_y[j]] += np.exp(sims[j] / temperature)
        out[i] /= out[i].sum()
    return out


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (7, 0.07), (20, 0.5), (60, 0.07)])
def test_the_votes_match_the_definition_computed_row_by_row(k, temperature):
    train_x, train_y, test_x = _data()
    expected = _brute_force(train_x, train_y, test_x, k, temperature, 3)
    assert np.allclose(knn_proba(train_x, train_y, test_x, k, temperature, n_classes=3), expected, atol=1e-5)


def test_chunks_do_not_change_the_answer_and_rows_sum_to_one():
    train_x, train_y, test_x = _data(n_test=50)
    whole = knn_proba(train_x, train_y, test_x, 10, n_classes=4)
    assert np.allclose(knn_proba(train_x, train_y, test_x, 10, n_classes=4, chunk=7), whole)
    assert whole.shape == (50, 4) and np.allclose(whole.sum(1), 1) and np.all(whole[:, 3] == 0)


def test_a_large_temperature_is_scikit_learns_uniform_cosine_knn():
    train_x, train_y, test_x = _data(n_train=80, n_test=40)
    sk = KNeighborsClassifier(n_neighbors=9, metric="cosine").fit(train_x, train_y)
    ours = knn_proba(train_x, train_y, test_x, 9, temperature=1e6, n_classes=3)
    assert np.allclose(ours, sk.predict_proba(test_x), atol=1e-5)
    untied = np.sort(ours, axis=1)[:, -1] - np.sort(ours, axis=1)[:, -2] > 1e-3
    assert untied.sum() > 30 and np.array_equal(ours.argmax(1)[untied], sk.predict(test_x)[untied])


def test_a_small_temperature_lets_the_nearest_tile_decide():
    train_x = np.array([[1.0, 0.0], [0.9, 0.5], [0.8, 0.6]])
    proba = knn_proba(train_x, np.array([0, 1, 1]), np.array([[1.0, 0.05]]), k=3, temperature=0.01, n_classes=2)
    assert proba[0, 0] > 0.99  # two neighbours of class 1 lose to the one much closer tile of class 0


def test_similarity_is_cosine_so_the_scale_of_a_vector_does_not_matter():
    train_x, train_y, test_x = _data()
    scaled = knn_proba(train_x * 50, train_y, test_x * 0.01, 5, n_classes=3)
    assert np.allclose(scaled, knn_proba(train_x, train_y, test_x, 5, n_classes=3))


def test_k_larger_than_the_training_set_is_an_error_naming_both():
    train_x, train_y, test_x = _data(n_train=12)
    with pytest.raises(ValueError, match=r"k=20 must be between 1 and the number of training tiles \(12\)"):
        knn_proba(train_x, train_y, test_x, 20, n_classes=3)


def test_labels_outside_the_classes_and_mismatched_shapes_are_refused():
    train_x, train_y, test_x = _data()
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        knn_proba(train_x, train_y, test_x, 3, n_classes=2)
    with pytest.raises(ValueError, match="same width"):
        knn_proba(train_x, train_y, test_x[:, :2], 3, n_classes=3)
