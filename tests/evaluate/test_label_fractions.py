"""Label fractions: whole groups kept or dropped, every class kept, stratified, deterministic per seed."""

import logging

import numpy as np
import pytest

from sslray.evaluate.label_fractions import fraction_name, fraction_scores, fraction_subsample


def _table(n_groups_per_class=(40, 20, 10), tiles: int = 5):
    labels = np.concatenate([np.repeat(f"c{c}", n * tiles) for c, n in enumerate(n_groups_per_class)])
    groups = np.repeat(np.arange(sum(n_groups_per_class)), tiles).astype(str)
    return labels, groups


def test_whole_groups_are_kept_or_dropped_and_every_class_keeps_its_share():
    labels, groups = _table()
    rows = fraction_subsample(labels, groups, 0.1, seed=0)
    kept = set(groups[rows])
    assert all((groups[rows] == g).sum() == (groups == g).sum() for g in kept)  # no group cut in two
    per_class = {c: len(set(groups[rows][labels[rows] == c])) for c in ("c0", "c1", "c2")}
    assert per_class == {"c0": 4, "c1": 2, "c2": 1}
    assert np.all(np.diff(rows) > 0)


def test_the_same_seed_draws_the_same_subsample_and_another_seed_another():
    labels, groups = _table()
    first = fraction_subsample(labels, groups, 0.25, seed=3)
    assert np.array_equal(first, fraction_subsample(labels, groups, 0.25, seed=3))
    assert not np.array_equal(first, fraction_subsample(labels, groups, 0.25, seed=4))


def test_a_fraction_too_small_keeps_one_group_per_class_and_says_so(caplog):
    labels, groups = _table()
    with caplog.at_level(logging.WARNING, "sslray.evaluate.label_fractions"):
        rows = fraction_subsample(labels, groups, 0.01, seed=0)
    assert sorted(set(labels[rows])) == ["c0", "c1", "c2"] and len(set(groups[rows])) == 3
    assert "label fraction 0.01 (seed 0): keeping one group for class(es) 'c0' (40 groups x 0.01 = 0.4)" in caplog.text


def test_a_class_that_is_only_ever_a_minority_of_its_groups_still_gets_a_group(caplog):
    labels = np.array(["a", "a", "a"] * 8 + ["a", "a", "b"] * 2)  # 'b': one tile in each of the last 2 groups
    groups = np.repeat(np.arange(10), 3)
    with caplog.at_level(logging.WARNING, "sslray.evaluate.label_fractions"):
        draws = [fraction_subsample(labels, groups, 0.2, seed=seed) for seed in range(8)]
    assert all(set(labels[rows]) == {"a", "b"} and len(set(groups[rows])) <= 3 for rows in draws)
    assert "'b' (the majority of none of the kept groups)" in caplog.text  # some seed kept neither of them


def test_without_groups_tiles_are_the_units():
    labels = np.repeat(np.array(["x", "y"]), 50)
    rows = fraction_subsample(labels, None, 0.1, seed=0)
    assert len(rows) == 10 and (labels[rows] == "x").sum() == 5
    assert len(fraction_subsample(labels, None, 1.0, seed=0)) == 100


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_a_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(ValueError, match=r"a label fraction must be in \(0, 1\]"):
        fraction_subsample(np.array(["a", "b"]), None, fraction, seed=0)


def test_fraction_scores_fit_on_training_rows_only_once_per_seed():
    labels, groups = _table()
    train = np.arange(0, len(labels), 2)  # every other tile: groups stay whole within these rows
    seen = []
    out = fraction_scores(labels, groups, train, 0.5, [0, 1], lambda rows: seen.append(rows) or {"score": 1.0})
    assert len(seen) == 2 and all(set(rows) <= set(train) for rows in seen)
    assert [n for n, _ in out] == [len(rows) for rows in seen] and out[0][1] == {"score": 1.0}


def test_model_names_read_as_percentages():
    assert [fraction_name(f) for f in (0.01, 0.1, 1.0, 0.005)] == ["linear_1%", "linear_10%", "linear_100%",
                                                                    "linear_0.5%"]
    assert fraction_name(0.07, "knn") == "knn_7%"
