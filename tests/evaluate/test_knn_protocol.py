"""``sslray evaluate --protocol knn``: k chosen on the validation split (one Tune trial per k), the same
splits as the linear probe, results.json with bootstrap intervals, the MLflow run with the lineage."""

import json

import mlflow
import numpy as np
import pytest

from sslray import storage
from sslray.cli import main
from sslray.config import load_config
from sslray.evaluate.knn_protocol import KNNConfig, knn_trial, run_knn
from sslray.evaluate.linear_probe import Split
from sslray.evaluate.protocols import get_protocol
from sslray.evaluate.run import EvaluateConfig, run_evaluate
from tests.evaluate.test_run import _separable, _table


def test_knn_is_a_registered_protocol_with_its_shipped_config():
    assert get_protocol("knn").Config is KNNConfig
    cfg = load_config(KNNConfig, "configs/evaluate/knn.yaml", ["embeddings=somewhere"])
    assert cfg.k_grid == [10, 20, 50, 100] and cfg.temperature == 0.07 and cfg.cpus_per_trial == 0.25


@pytest.mark.parametrize("bad, message", [
    ({"embeddings": ""}, "embeddings: the embeddings table URL is required"),
    ({"k_grid": []}, "k_grid must list whole numbers"),
    ({"k_grid": [5, 0]}, "k_grid must list whole numbers"),
    ({"k_grid": [2.5]}, "k_grid must list whole numbers"),
    ({"temperature": 0.0}, "temperature must be positive"),
    ({"n_bootstrap": -1}, "n_bootstrap must be at least 0"),
    ({"val_fraction": 0.0}, r"val_fraction must be in \(0, 1\)"),
    ({"cpus_per_trial": -1}, "trial resources must be positive"),
])
def test_bad_settings_are_refused_when_the_config_is_made(bad, message):
    with pytest.raises(ValueError, match=message):
        KNNConfig(**{"embeddings": "emb", **bad})


def test_a_trial_votes_from_inner_training_tiles_for_validation_tiles_only():
    features, labels = _separable()
    targets = (labels == "b").astype(int)
    inner = Split(np.arange(0, 30), np.arange(30, 40))
    assert knn_trial({"k": 5}, features, targets, inner, 0.07, 2)["val_balanced_accuracy"] == 1.0
    flipped = targets.copy()
    flipped[30:] = 1 - flipped[30:]  # validation labels the votes never saw, flipped
    assert knn_trial({"k": 5}, features, flipped, inner, 0.07, 2)["val_balanced_accuracy"] == 0.0


def test_a_k_beyond_the_inner_training_split_is_refused_before_ray(tmp_path, monkeypatch):
    monkeypatch.setattr("sslray.runtime.ensure_ray", lambda: pytest.fail("Ray started before the check"))
    features, labels = _separable()
    cfg = KNNConfig(embeddings=_table(tmp_path / "emb", features, labels), run_dir=str(tmp_path / "runs"),
                    k_grid=[5, 100])
    with pytest.raises(ValueError, match=r"k_grid holds k=100, more neighbours than the \d+ tiles of the inner "
                                         "training split"):
        run_knn(cfg)
    assert not (tmp_path / "runs" / "tune").exists()


@pytest.fixture
def fake_grids(monkeypatch):
    """Both protocols' grid runners in process: each point's trial runs here, kNN's scores can be set."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen: dict = {"knn_scores": None}

    def run_points(trial, points, shared, resources, name, run_dir):
        seen[name] = shared.get("inner")
        if name.startswith("knn") and seen["knn_scores"] is not None:
            return [{"val_balanced_accuracy": seen["knn_scores"][p["k"]]} for p in points]
        return [trial(p, **shared) for p in points]

    monkeypatch.setattr("sslray.evaluate.knn_protocol.run_points", run_points)
    monkeypatch.setattr("sslray.evaluate.run.run_points", run_points)
    return seen


def test_the_best_k_wins_ties_go_to_the_smaller_k_and_the_splits_are_the_linear_probes(fake_grids, tmp_path):
    features, labels = _separable(n=60)
    url = _table(tmp_path / "emb", features, labels)
    runs = tmp_path / "runs"
    fake_grids["knn_scores"] = {1: 0.6, 3: 0.9, 7: 0.9}
    scores = run_knn(KNNConfig(embeddings=url, run_dir=str(runs), k_grid=[7, 3, 1, 3], n_bootstrap=0))
    run_evaluate(EvaluateConfig(embeddings=url, run_dir=str(runs), c_grid=[1.0], n_bootstrap=0, max_iter=200))
    assert scores["k"] == 3 and scores["balanced_accuracy"] > 0.7  # class a sits at the origin: cosine blurs it
    knn_inner, linear_inner = fake_grids["knn-emb"], fake_grids["linear_probe-emb"]
    assert np.array_equal(knn_inner.train, linear_inner.train) and np.array_equal(knn_inner.test, linear_inner.test)
    knn_doc = json.loads((runs / "results" / "knn" / "emb" / "results.json").read_text())
    linear_doc = json.loads((runs / "results" / "linear_probe" / "emb" / "results.json").read_text())
    assert knn_doc["split"] == linear_doc["split"] and [g["k"] for g in knn_doc["grid"]] == [1, 3, 7]


@pytest.mark.ray
def test_the_cli_runs_each_k_as_a_tune_trial_and_publishes_results_with_lineage(ray_session, tmp_path, capsys):
    features, labels = _separable(n=96, shift=1.5)
    url = _table(tmp_path / "emb", features, labels, patients=True)
    storage.mark_complete(url, {"n_rows": 96, "checkpoint": "/ckpt/a"})
    runs = tmp_path / "runs"
    args = ["evaluate", "--protocol", "knn", "--embeddings", url, f"run_dir={runs}", "k_grid=[1,5,9]",
            "n_bootstrap=50"]
    assert main(args) == 0
    out = capsys.readouterr().out  # Tune prints its own lines before the scores
    scores = json.loads(out[out.rindex("{\n"):])
    assert scores["k"] in (1, 5, 9) and scores["balanced_accuracy"] > 0.7 and "patient_accuracy" in scores
    doc = json.loads((runs / "results" / "knn" / "emb" / "results.json").read_text())
    assert doc["protocol"] == "knn" and doc["n_tiles"] == 96 and list(doc["models"]) == ["knn"]
    model = doc["models"]["knn"]
    assert model["best_params"] == {"k": scores["k"]}
    assert {"balanced_accuracy", "macro_auc", "accuracy", "image_accuracy", "patient_accuracy"} <= set(model)
    low, high = model["balanced_accuracy"]["ci95"]
    assert low <= model["balanced_accuracy"]["mean"] == scores["balanced_accuracy"] <= high
    assert (runs / "results" / "knn" / "emb" / "results.md").exists()
    client = mlflow.MlflowClient(f"sqlite:///{runs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("sslray").experiment_id])
    assert run.data.tags["sslray.checkpoint"] == "/ckpt/a" and run.data.tags["sslray.protocol"] == "knn"
    assert run.data.metrics["best_k"] == scores["k"] and "test_balanced_accuracy_ci95_high" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "grid_val_balanced_accuracy")] == [1, 5, 9]
    pictures = {"knn_roc.png", "knn_confusion.png", "knn_embedding_map.png"}
    assert {"results.json", "results.md", *pictures} <= {a.path for a in client.list_artifacts(run.info.run_id)}
