"""``sslray evaluate`` (linear probe): one Tune trial per C, the best C by validation score, refit on all
training labels and on label fractions, scored with intervals, published as results.json and logged.

The grid runner is replaced by an in-process one for the selection logic; one small real Ray Tune run
goes through the CLI (``--protocol linear``).
"""

import json

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslray import storage
from sslray.artifacts.linear_head import HEAD_FILE, read_head
from sslray.cli import main
from sslray.config import load_config
from sslray.evaluate.linear_probe import Split
from sslray.evaluate.run import EvaluateConfig, _c_step, grid_trial, run_evaluate


def _separable(n: int = 40, seed: int = 0, shift: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array(["a", "b"] * (n // 2))
    features = rng.normal(size=(n, 4)).astype(np.float32) + (labels == "b")[:, None] * shift
    return features, labels


def test_a_trial_fits_on_inner_train_and_scores_on_validation_only():
    features, labels = _separable()
    inner = Split(np.arange(0, 30), np.arange(30, 40))
    assert grid_trial({"C": 1.0}, features, labels, inner, 200, 0) == {"val_balanced_accuracy": 1.0,
                                                                       "val_macro_auc": 1.0}
    swapped = labels.copy()
    swapped[30:] = np.where(labels[30:] == "a", "b", "a")  # validation labels the fit never saw, flipped
    assert grid_trial({"C": 1.0}, features, swapped, inner, 200, 0)["val_balanced_accuracy"] == 0.0


def _table(path, features: np.ndarray, labels: np.ndarray, patients: bool = False) -> str:
    n = len(labels)
    columns = {"tile_id": [f"t{i}" for i in range(n)], "label": labels.tolist(),
               "image_id": [f"img{i // 2}" for i in range(n)]}
    if patients:
        columns |= {"group": [f"p{i // 4}" for i in range(n)], "patient_id": [f"p{i // 4}" for i in range(n)]}
    flat = pa.array(features.reshape(-1))
    table = pa.table(columns).append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, features.shape[1]))
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-0.parquet")
    storage.mark_complete(str(path), {"n_rows": n})
    return str(path)


@pytest.fixture
def fake_grid(monkeypatch):
    """Stands in for ``tune_grid.run_points``: reports ``scores[C]`` per point (no scores: runs the trial)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen: dict = {"scores": None}

    def run_points(trial, points, shared, resources, name, run_dir):
        seen.update(points=points, cpus=resources.cpus, name=name)
        if seen["scores"] is None:
            return [trial(p, **shared) for p in points]
        if isinstance(seen["scores"], Exception):
            raise seen["scores"]
        return [{"val_balanced_accuracy": seen["scores"][p["C"]], "val_macro_auc": 0.5} for p in points]

    monkeypatch.setattr("sslray.evaluate.run.run_points", run_points)
    return seen


def test_the_best_c_wins_on_validation_and_ties_go_to_the_smaller_c(fake_grid, tmp_path):
    features, labels = _separable()
    fake_grid["scores"] = {10.0: 0.7, 1.0: 0.9, 0.1: 0.9, 0.01: 0.5}
    out = tmp_path / "runs"
    cfg = EvaluateConfig(embeddings=_table(tmp_path / "emb", features, labels), run_dir=str(out),
                         c_grid=[0.01, 0.1, 1.0, 10.0], max_iter=200, n_bootstrap=0)
    scores = run_evaluate(cfg)
    assert [p["C"] for p in fake_grid["points"]] == [0.01, 0.1, 1.0, 10.0] and fake_grid["name"] == "linear_probe-emb"
    assert scores["C"] == 0.1 and scores["balanced_accuracy"] == 1.0 and scores["n_train"] + scores["n_test"] == 40
    assert {"macro_auc", "accuracy"} <= set(scores) and "patient_accuracy" not in scores  # no patient_id column
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
    assert run.data.metrics["best_C"] == 0.1 and run.data.tags["sslray.stage"] == "evaluate"
    assert run.data.tags["sslray.protocol"] == "linear_probe" and run.data.metrics["test_balanced_accuracy"] == 1.0
    assert run.info.run_name == "evaluate emb" and run.info.status == "FINISHED"  # named by the table's folder
    grid = client.get_metric_history(run.info.run_id, "grid_val_balanced_accuracy")
    assert [(m.step, m.value) for m in grid] == [(_c_step(c), fake_grid["scores"][c]) for c in (0.01, 0.1, 1.0, 10.0)]
    doc = json.loads((out / "results" / "linear_probe" / "emb" / "results.json").read_text())
    assert list(doc["models"]) == ["linear_100%"] and doc["models"]["linear_100%"]["best_params"] == {"C": 0.1}
    assert "ci95" not in doc["models"]["linear_100%"]["balanced_accuracy"]  # n_bootstrap=0: no intervals
    head = read_head(str(out / "results" / "linear_probe" / "emb" / HEAD_FILE))  # the 100% probe, for Grad-CAM
    assert head.classes == ["a", "b"] and head.weight.shape == (2, 4) and head.lineage["embeddings"].endswith("emb")
    assert not head.l2_normalized  # this table's _SUCCESS does not say it was normalised
    logits = features @ head.weight.T + head.bias
    assert (np.array(["a", "b"])[logits.argmax(axis=1)] == labels).mean() > 0.95  # it separates the classes
    assert HEAD_FILE in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_label_fractions_refit_on_subsamples_and_report_mean_and_sd_over_seeds(fake_grid, tmp_path):
    features, labels = _separable(n=80, shift=1.5)
    out = tmp_path / "runs"
    cfg = EvaluateConfig(embeddings=_table(tmp_path / "emb", features, labels), run_dir=str(out), c_grid=[1.0],
                         label_fractions=[0.1, 0.5, 1.0], fraction_seeds=3, n_bootstrap=30, max_iter=200)
    scores = run_evaluate(cfg)
    doc = json.loads((out / "results" / "linear_probe" / "emb" / "results.json").read_text())
    assert list(doc["models"]) == ["linear_10%", "linear_50%", "linear_100%"]
    tenth, full = doc["models"]["linear_10%"], doc["models"]["linear_100%"]
    assert len(tenth["balanced_accuracy"]["folds"]) == 3 and tenth["best_params"] == {"C": 1.0, "seeds": [0, 1, 2]}
    assert all(n < doc["split"]["n_train"] / 5 for n in tenth["n_train"])
    assert full["balanced_accuracy"]["mean"] == scores["balanced_accuracy"]
    low, high = full["balanced_accuracy"]["ci95"]
    assert low <= scores["balanced_accuracy"] <= high
    md = (out / "results" / "linear_probe" / "emb" / "results.md").read_text()
    assert "| linear_10% |" in md and "±" in md
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
    assert {"linear_10pct/balanced_accuracy", "linear_10pct/balanced_accuracy_sd",
            "test_balanced_accuracy_ci95_low"} <= set(run.data.metrics)


def test_a_failing_grid_fails_the_run(fake_grid, tmp_path):
    features, labels = _separable()
    fake_grid["scores"] = RuntimeError("grid point {'C': 1.0} failed: boom")
    cfg = EvaluateConfig(embeddings=_table(tmp_path / "emb", features, labels), run_dir=str(tmp_path / "runs"),
                         c_grid=[1.0])
    with pytest.raises(RuntimeError, match="failed: boom"):
        run_evaluate(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (run,) = client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
    assert run.info.status == "FAILED"
    assert not (tmp_path / "runs" / "results").exists()


def test_grid_steps_are_ordered_non_negative_integers_by_log10_c():
    steps = [_c_step(c) for c in (1e-4, 1e-3, 0.5, 1.0, 10.0)]
    assert steps == sorted(steps) and steps[0] >= 0 and _c_step(1.0) == 1000 and _c_step(10.0) == 1100


@pytest.mark.parametrize("bad, message", [
    ({"embeddings": ""}, "embeddings: the embeddings table URL is required"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
    ({"c_grid": [0.1, 0.0]}, "c_grid must list positive"),
    ({"label_fractions": [0.0, 1.0]}, r"label_fractions must list fractions in \(0, 1\]"),
    ({"fraction_seeds": 0}, "fraction_seeds must be at least 1"),
    ({"n_bootstrap": -1}, "n_bootstrap at least 0"),
    ({"cpus_per_trial": 0}, "trial resources must be positive"),
])
def test_bad_settings_are_refused_when_the_config_is_made(bad, message):
    with pytest.raises(ValueError, match=message):
        EvaluateConfig(**{"embeddings": "emb", **bad})


def test_the_shipped_config_asks_for_label_fractions_and_the_default_for_all_labels_only():
    cfg = load_config(EvaluateConfig, "configs/evaluate/linear_probe.yaml", ["embeddings=somewhere"])
    assert cfg.label_fractions == [0.01, 0.1, 1.0] and cfg.fraction_seeds == 3 and cfg.n_bootstrap == 1000
    assert EvaluateConfig(embeddings="e").label_fractions == [1.0]


@pytest.mark.ray
def test_the_cli_runs_the_grid_on_tune_and_publishes_patient_level_results(ray_session, tmp_path, capsys):
    features, labels = _separable(n=96, shift=1.5)
    url = _table(tmp_path / "emb", features, labels, patients=True)
    runs = tmp_path / "runs"
    args = ["evaluate", "--protocol", "linear", "--embeddings", url, f"run_dir={runs}", "c_grid=[0.1,1.0]",
            "label_fractions=[0.25,1.0]", "fraction_seeds=2", "n_bootstrap=50", "cpus_per_trial=0.25"]
    assert main(args) == 0
    out = capsys.readouterr().out  # Tune prints its own lines before the scores
    scores = json.loads(out[out.rindex("{\n"):])
    assert {"balanced_accuracy", "macro_auc", "image_accuracy", "patient_accuracy", "C", "n_train", "n_test"} <= set(
        scores)
    doc = json.loads((runs / "results" / "linear_probe" / "emb" / "results.json").read_text())
    assert doc["protocol"] == "linear_probe" and doc["n_tiles"] == 96 and doc["classes"] == ["a", "b"]
    assert list(doc["models"]) == ["linear_25%", "linear_100%"] and [g["C"] for g in doc["grid"]] == [0.1, 1.0]
    full = doc["models"]["linear_100%"]
    assert full["patient_accuracy"]["mean"] == scores["patient_accuracy"]
    assert full["patient_accuracy"]["ci95"][0] <= scores["patient_accuracy"] <= full["patient_accuracy"]["ci95"][1]
    assert doc["split"]["grouped_by"] == "group" and doc["split"]["bootstrap_unit"] == "patient_id"
    client = mlflow.MlflowClient(f"sqlite:///{runs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("sslray").experiment_id])
    assert run.data.metrics["test_patient_accuracy"] == scores["patient_accuracy"]
    pictures = {"linear_roc.png", "linear_confusion.png", "linear_embedding_map.png"}
    assert pictures <= {p.name for p in (runs / "results" / "linear_probe" / "emb").iterdir()}
    assert {"results.json", "results.md", *pictures} <= {a.path for a in client.list_artifacts(run.info.run_id)}
