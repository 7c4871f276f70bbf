"""From trials to outer-fold scores: the best point per head and fold, bag- and patient-level metrics."""

import numpy as np
import pytest

from sslray.evaluate.bags import Bags
from sslray.evaluate.folds import Fold
from sslray.evaluate.mil_results import choose, fold_scores, head_metrics, pooled_outputs


def _bags():
    n = 8
    return Bags(np.array([f"s{i}" for i in range(n)]), np.zeros((n, 2), np.float32), np.arange(n + 1), "slide_id",
                labels=np.array(["a", "b"] * 4), patients=np.array(["p0", "p1", "p0", "p1", "p2", "p3", "p2", "p3"]))


FOLDS = [Fold(np.arange(4, 8), np.arange(0, 4)), Fold(np.arange(0, 4), np.arange(4, 8))]


def _result(best_val, outputs, epoch=3):
    return {"best_val": best_val, "best_epoch": epoch, "val_curve": [best_val], "test_outputs": outputs}


def test_the_best_inner_score_wins_per_head_and_fold_and_nan_never_wins():
    good = [[-2.0], [2.0], [-2.0], [2.0]]
    bad = [[2.0], [-2.0], [2.0], [-2.0]]
    points = [{"head": "abmil", "lr": lr, "weight_decay": 0.0, "fold": k} for k in (0, 1) for lr in (1e-3, 1e-4)]
    results = [_result(0.7, bad), _result(0.9, good, 7), _result(float("nan"), bad), _result(0.6, good)]
    chosen = choose(points, results, FOLDS)["abmil"]
    assert [f.params["lr"] for f in chosen.folds] == [1e-4, 1e-4]
    assert chosen.best_params()[0] == {"lr": 1e-4, "weight_decay": 0.0, "epochs": 7, "inner_score": 0.9}
    metrics = head_metrics(_bags(), chosen)
    assert metrics["auc"] == [1.0, 1.0] and metrics["balanced_accuracy"] == [1.0, 1.0]
    index, outputs = pooled_outputs(chosen, 8)
    assert sorted(index) == list(range(8)) and outputs.shape == (8, 1)


def test_patient_level_scores_average_the_slides_of_a_patient():
    bags = _bags()
    points = [{"head": "mean_pool", "lr": 1e-3, "weight_decay": 0.0, "fold": 0}]
    # p0's slides: one right, one wrong but less sure; averaged, p0 is right
    chosen = choose(points, [_result(0.8, [[-3.0], [1.0], [0.5], [-0.5]])], FOLDS[:1])["mean_pool"]
    scores = fold_scores(bags, chosen.folds[0])
    assert scores["accuracy"] == 0.5 and scores["patient_accuracy"] == 1.0


def test_survival_folds_score_the_c_index():
    n = 6
    bags = Bags(np.array([f"s{i}" for i in range(n)]), np.zeros((n, 2), np.float32), np.arange(n + 1), "slide_id",
                time=np.arange(1.0, 7.0), event=np.ones(n, bool))
    folds = [Fold(np.arange(3), np.arange(3, 6))]
    chosen = choose([{"head": "abmil", "lr": 1e-3, "weight_decay": 0.0, "fold": 0}],
                    [_result(0.5, [[3.0], [2.0], [1.0]])], folds)["abmil"]
    assert fold_scores(bags, chosen.folds[0]) == {"c_index": pytest.approx(1.0)}
