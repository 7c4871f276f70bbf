"""Training a MIL head on bags: padding, per-epoch tile resampling, the losses, and one nested-CV
grid point (inner curve -> epoch count -> refit -> test outputs)."""

import numpy as np
import pytest
import torch

from sslray.evaluate.bag_table import BagSource, build_bags
from sslray.evaluate.folds import nested_folds
from sslray.evaluate.metrics import auc, class_probabilities
from sslray.evaluate.mil_train import TrainSettings, pad_batch, predict, run_grid_point, score, train
from tests.evaluate.bag_fixtures import tile_table


@pytest.fixture(scope="module")
def bags():
    table, features = tile_table(n_bags=40, dim=8, seed=2)
    return build_bags(table, features, BagSource("mem://t"))


def test_a_batch_is_padded_with_a_mask_and_long_bags_are_cut_afresh_each_draw(bags):
    x, mask = pad_batch(bags, np.array([0, 1]), 1000, np.random.default_rng(0))
    assert x.shape[:2] == mask.shape and mask.sum(1).tolist() == bags.sizes[:2].tolist()
    assert torch.all(x[~mask] == 0)
    rng = np.random.default_rng(0)
    first, m1 = pad_batch(bags, np.array([0]), 3, rng)
    second, _ = pad_batch(bags, np.array([0]), 3, rng)
    assert m1.sum() == 3 and not torch.equal(first, second)  # another 3 tiles next epoch


def test_a_head_learns_bags_whose_label_hangs_on_two_tiles(bags):
    settings = TrainSettings(head="abmil", lr=1e-3, epochs=30)
    targets = bags.targets()
    head, history = train(bags, targets, np.arange(30), settings, 30, watch=np.arange(30, 40))
    assert len(history) == 30 and history[-1].shape == (10, 1)
    assert auc(targets[30:], class_probabilities(history[-1])) >= 0.9


def test_evaluation_is_deterministic(bags):
    settings = TrainSettings(head="mean_pool", epochs=1, max_tiles=4)
    head, _ = train(bags, bags.targets(), np.arange(20), settings, 1)
    np.testing.assert_array_equal(predict(head, bags, np.arange(5), settings), predict(head, bags, np.arange(5),
                                                                                        settings))


def test_a_grid_point_picks_its_epoch_on_the_inner_curve_and_tests_once(bags):
    folds = nested_folds(bags.labels, bags.patients, 3, 2, seed=0)
    point = run_grid_point(bags, folds[0], TrainSettings(head="mean_pool", lr=1e-2, epochs=8))
    assert len(point.val_curve) == 8 and 1 <= point.best_epoch <= 8
    assert point.best_val == max(point.val_curve)
    assert point.best_val == point.val_curve[point.best_epoch - 1]
    assert np.asarray(point.test_outputs).shape == (len(folds[0].test), 1)


def test_several_classes_use_one_logit_each_and_survival_scores_by_c_index(bags):
    assert TrainSettings(head="abmil", n_classes=3).n_outputs == 3
    assert TrainSettings(head="abmil", survival=True).n_outputs == 1
    s = TrainSettings(head="abmil", survival=True)
    targets = np.array([[1.0, 1], [2.0, 1], [3.0, 0], [4.0, 1]])
    assert score(s, targets, np.array([[4.0], [3.0], [2.0], [1.0]])) == 1.0  # higher risk, shorter time


def test_three_classes_train_with_one_logit_each_and_score_macro_auc():
    from sslray.evaluate.bags import Bags
    from sslray.evaluate.mil_results import choose, head_metrics

    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 10, 45)
    classes = np.arange(45) % 3
    tiles = []
    for size, c in zip(sizes, classes):
        bag = rng.normal(size=(size, 6))
        bag[:2, c] += 5.0  # the class is the axis its two marked tiles are shifted along
        tiles.append(bag)
    bags = Bags(np.array([f"s{i:02d}" for i in range(45)]), np.concatenate(tiles).astype(np.float32),
                np.append(0, np.cumsum(sizes)), "slide_id", labels=np.array(["a", "b", "c"])[classes])
    folds = nested_folds(bags.labels, bags.ids, 3, 2, seed=0)
    settings = TrainSettings(head="abmil", lr=1e-2, epochs=15, n_classes=3)
    points = [{"head": "abmil", "lr": 1e-2, "weight_decay": 0.0, "fold": k} for k in range(3)]
    results = [run_grid_point(bags, folds[k], settings).to_dict() for k in range(3)]
    assert np.asarray(results[0]["test_outputs"]).shape == (15, 3)
    metrics = head_metrics(bags, choose(points, results, folds)["abmil"])
    assert np.mean(metrics["auc"]) > 0.85 and np.mean(metrics["balanced_accuracy"]) > 0.6


def test_a_trial_trains_on_the_gpu_it_was_given(monkeypatch):
    from sslray.evaluate.mil_train import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(TrainSettings(head="abmil")).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # Ray sets CUDA_VISIBLE_DEVICES for the trial
    assert resolve_device(TrainSettings(head="abmil")).type == "cuda"
    assert resolve_device(TrainSettings(head="abmil", device="cpu")).type == "cpu"


def test_features_are_standardised_with_the_training_tiles_only_and_padding_stays_zero(bags):
    from sslray.evaluate.mil_train import Standardised, tile_statistics

    mean, sd = tile_statistics(bags, np.array([0, 1]))
    both = np.concatenate([bags.tiles(0), bags.tiles(1)])
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(sd, both.std(0), rtol=1e-5)

    class Echo(torch.nn.Module):
        def forward(self, x, mask):
            return x

    model = Standardised(Echo(), mean, sd)
    x, mask = pad_batch(bags, np.array([0, 5]), 1000, np.random.default_rng(0))
    z = model(x, mask)
    assert torch.all(z[~mask] == 0)
    np.testing.assert_allclose(z[0, :bags.sizes[0]].numpy(), (bags.tiles(0) - mean) / sd, rtol=1e-4, atol=1e-5)
    head, _ = train(bags, bags.targets(), np.arange(10), TrainSettings(head="abmil", epochs=1), 1)
    assert isinstance(head, Standardised) and head.attention(x, mask).shape == mask.shape
    raw, _ = train(bags, bags.targets(), np.arange(10), TrainSettings(head="abmil", epochs=1, standardize=False), 1)
    assert not isinstance(raw, Standardised)
