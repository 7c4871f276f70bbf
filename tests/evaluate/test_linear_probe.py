import numpy as np
import pytest

from sslray.evaluate.linear_probe import class_proba, fit_probe, grouped_split, linear_head, probe_metrics


def test_grouped_split_never_shares_a_group_and_keeps_every_class():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 5)
    labels = np.repeat(rng.integers(0, 4, 40), 5).astype(str)
    split = grouped_split(labels, groups, 0.25, seed=0)
    assert not set(groups[split.train]) & set(groups[split.test])
    assert set(labels[split.test]) == set(labels)
    assert 0.15 < len(split.test) / len(labels) < 0.35


def test_a_class_with_one_group_is_an_error_naming_it():
    with pytest.raises(ValueError, match="class 'b' has only 1 of its groups"):
        grouped_split(np.array(["a", "b", "a", "b"]), np.array([1, 3, 2, 3]), 0.25, seed=0)


def test_small_classes_get_fewer_folds_not_empty_test_classes():
    labels = np.repeat(np.array(["a", "b", "c"]), 3)  # 3 per class: at most 3 folds
    split = grouped_split(labels, np.arange(9), 0.25, seed=0)
    assert set(labels[split.test]) == {"a", "b", "c"} and len(split.test) == 3


def test_probe_separates_separable_classes_and_not_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b", "c"]), 60)
    signal = np.eye(3)[np.repeat(np.arange(3), 60)] * 3 + rng.normal(size=(180, 3))
    noise = rng.normal(size=(180, 3))
    train, test = np.arange(180) % 4 != 0, np.arange(180) % 4 == 0
    good = probe_metrics(fit_probe(signal[train], labels[train], 1.0), signal[test], labels[test])
    bad = probe_metrics(fit_probe(noise[train], labels[train], 1.0), noise[test], labels[test])
    assert good["balanced_accuracy"] > 0.9 and good["macro_auc"] > 0.95
    assert bad["balanced_accuracy"] < 0.6 and 0.3 < bad["macro_auc"] < 0.7


def test_binary_auc():
    x = np.r_[np.zeros(20), np.ones(20)][:, None] + np.random.default_rng(1).normal(0, 0.1, (40, 1))
    y = np.array(["neg"] * 20 + ["pos"] * 20)
    assert probe_metrics(fit_probe(x, y, 1.0), x, y)["macro_auc"] == pytest.approx(1.0)


def test_class_proba_puts_a_fit_on_fewer_classes_in_the_full_class_order():
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    model = fit_probe(x, np.array(["a", "a", "c", "c"]), 1.0)
    proba = class_proba(model, ["a", "b", "c"], x)
    assert proba.shape == (4, 3) and np.all(proba[:, 1] == 0) and np.allclose(proba.sum(1), 1)
    assert list(proba.argmax(1)) == [0, 0, 2, 2]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_head_is_the_probe_on_raw_embeddings_with_one_logit_per_class(n_classes):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b", "c"][:n_classes]), 30)
    features = rng.normal(size=(len(labels), 5)) * [1, 10, 0.1, 3, 1] + 5  # unstandardised, off-centre
    features[:, 0] += np.searchsorted(["a", "b", "c"], labels)  # one informative feature
    model = fit_probe(features, labels, c=1.0)
    head = linear_head(model, l2_normalized=False, lineage={"embeddings": "emb"})
    assert head.weight.shape == (n_classes, 5) and head.classes == ["a", "b", "c"][:n_classes]
    proba = _softmax(features @ head.weight.T.astype(np.float64) + head.bias)
    np.testing.assert_allclose(proba, model.predict_proba(features), atol=1e-5)
    assert head.lineage == {"embeddings": "emb"} and not head.l2_normalized
