"""The survival baseline: a linear Cox model on mean-pooled bags, its penalty chosen on inner folds."""

import numpy as np
import pytest

from sslray.evaluate.bags import Bags
from sslray.evaluate.folds import nested_folds
from sslray.evaluate.linear_cox_cv import linear_cox_cv, mean_pooled
from sslray.evaluate.mil_results import fold_scores


def _bags(n=60, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 8, n)
    risk = rng.normal(size=n)
    tiles = np.concatenate([rng.normal(size=(s, 4)) + np.array([r, 0, 0, 0]) for s, r in zip(sizes, risk)])
    time = rng.exponential(np.exp(-2 * risk))
    event = rng.random(n) < 0.8
    return Bags(np.array([f"s{i}" for i in range(n)]), tiles.astype(np.float32), np.append(0, np.cumsum(sizes)),
                "slide_id", time=time, event=event)


def test_mean_pooling_is_the_mean_tile_of_each_bag():
    bags = _bags(5)
    np.testing.assert_allclose(mean_pooled(bags)[2], bags.tiles(2).mean(0), rtol=1e-6)


def test_the_baseline_ranks_held_out_bags_by_risk():
    bags = _bags()
    folds = nested_folds(bags.event.astype(int), bags.ids, 3, 3, seed=0)
    result = linear_cox_cv(bags, folds, [0.01, 1.0, 100.0])
    assert len(result.folds) == 3 and all(f.params["penalizer"] in (0.01, 1.0, 100.0) for f in result.folds)
    c = [fold_scores(bags, f)["c_index"] for f in result.folds]
    assert np.mean(c) > 0.65
    assert sorted(np.concatenate([f.test for f in result.folds])) == list(range(len(bags)))


def test_no_penalty_that_fits_is_an_error():
    bags = _bags(12)
    bags.event[:] = False
    bags.event[0] = True
    folds = nested_folds(np.arange(12) % 2, bags.ids, 2, 2, seed=0)
    with pytest.raises(ValueError, match="linear Cox: no penalizer"):
        linear_cox_cv(bags, folds, [0.1])
