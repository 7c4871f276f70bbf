"""Nested CV folds: stratified, grouped by patient (no patient on both sides, ever), and refused
with a clear reason when there are too few bags."""

import numpy as np
import pytest

from sslray.evaluate.bags import Bags
from sslray.evaluate.folds import bag_folds, nested_folds, split_column_folds


def _design(n_patients=30, seed=0):
    rng = np.random.default_rng(seed)
    slides_per_patient = rng.integers(1, 4, n_patients)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], slides_per_patient)
    labels = np.repeat(np.arange(n_patients) % 2, slides_per_patient)
    return labels, patients


def test_no_patient_is_in_train_and_test_of_an_outer_fold_nor_of_an_inner_fold():
    labels, patients = _design()
    folds = nested_folds(labels, patients, 5, 5, seed=3)
    assert len(folds) == 5
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(len(labels)))  # every bag is tested exactly once
    for fold in folds:
        assert not set(patients[fold.train]) & set(patients[fold.test])
        assert len(fold.inner) == 5
        for train, val in fold.inner:
            assert not set(patients[train]) & set(patients[val])
            assert set(train) | set(val) == set(fold.train) and not set(fold.test) & set(val)
        assert set(labels[fold.test]) == {0, 1}


def test_folds_are_reproducible_by_seed():
    labels, patients = _design()
    a, b = nested_folds(labels, patients, 5, 3, seed=1), nested_folds(labels, patients, 5, 3, seed=1)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b))


def test_fewer_bags_than_folds_names_the_class():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match=r"fewer patients/bags than outer folds \(5\) in class\(es\) '1': 3"):
        nested_folds(labels, np.arange(9).astype(str), 5, 5, where="bags x")
    with pytest.raises(ValueError, match="single class"):
        nested_folds(np.zeros(10), np.arange(10).astype(str), 5, 5)


def test_a_split_column_gives_one_outer_fold():
    split = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2)
    labels = np.array([0, 1] * 5)
    folds = split_column_folds(split, labels, np.arange(10).astype(str))
    assert len(folds) == 1 and list(folds[0].test) == [8, 9] and list(folds[0].inner[0][1]) == [6, 7]
    assert list(folds[0].train) == list(range(8))  # the refit uses train and val
    no_val = np.where(split == "val", "train", split)
    inner = split_column_folds(no_val, labels, np.arange(10).astype(str), n_inner=2)[0].inner
    assert len(inner) == 2
    groups = np.array(["a"] * 9 + ["b"])
    groups[8] = "a"
    with pytest.raises(ValueError, match=r"patient\(s\) \['a'\] have bags in both the train and test split"):
        split_column_folds(split, labels, groups)


def test_bag_folds_group_by_patient_and_stratify_survival_by_event():
    labels, patients = _design(20)
    n = len(labels)
    bags = Bags(np.array([f"s{i}" for i in range(n)]), np.zeros((n, 2), np.float32), np.arange(n + 1), "slide_id",
                time=np.arange(n, dtype=float) + 1, event=labels.astype(bool), patients=patients)
    for fold in bag_folds(bags, 4, 2, 0, "t"):
        assert not set(patients[fold.train]) & set(patients[fold.test])
        assert bags.event[fold.test].any()
