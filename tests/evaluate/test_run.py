"""``sslray evaluate``'s Ray Tune glue: one trial per C, the best C by validation score, refit and logged.

Tune itself is replaced by an in-process grid runner so the glue is tested without a Ray
cluster; the real Tune run is in tests/test_pipeline.py.
"""

from types import SimpleNamespace

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray import tune

from sslray import storage
from sslray.evaluate.linear_probe import Split
from sslray.evaluate.run import EvaluateConfig, _c_step, _tune_trial, run_evaluate


def _separable(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array(["a", "b"] * (n // 2))
    features = rng.normal(size=(n, 4)).astype(np.float32) + (labels == "b")[:, None] * 4.0
    return features, labels


def test_a_trial_fits_on_inner_train_and_scores_on_validation_only():
    features, labels = _separable()
    inner = Split(np.arange(0, 30), np.arange(30, 40))
    assert _tune_trial({"C": 1.0}, features, labels, inner, 200, 0) == {"val_balanced_accuracy": 1.0,
                                                                        "val_macro_auc": 1.0}
    swapped = labels.copy()
    swapped[30:] = np.where(labels[30:] == "a", "b", "a")  # validation labels the fit never saw, flipped
    assert _tune_trial({"C": 1.0}, features, swapped, inner, 200, 0)["val_balanced_accuracy"] == 0.0


def _table(path, features: np.ndarray, labels: np.ndarray) -> str:
    flat = pa.array(features.reshape(-1))
    table = pa.table({"tile_id": [f"t{i}" for i in range(len(labels))], "label": labels.tolist(),
                      "image_id": [f"img{i}" for i in range(len(labels))],
                      "embedding": pa.FixedSizeListArray.from_arrays(flat, features.shape[1])})
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-0.parquet")
    storage.mark_complete(str(path), {"n_rows": len(labels)})
    return str(path)


class _GridTuner:
    """Stands in for ``tune.Tuner``: reports ``scores[C]`` per grid point (None: the trial failed)."""

    scores: dict[float, float | None] = {}
    seen: dict = {}

    def __init__(self, trainable, param_space, tune_config, run_config):
        _GridTuner.seen = {"grid": param_space["C"]["grid_search"], "metric": tune_config.metric,
                           "mode": tune_config.mode}

    def fit(self):
        return [SimpleNamespace(config={"C": c}, error=None if s is not None else RuntimeError("boom"),
                                metrics={"val_balanced_accuracy": s, "val_macro_auc": 0.5, "time": 1.0})
                for c, s in self.scores.items()]


@pytest.fixture
def grid_tuner(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("sslray.runtime.ensure_ray", lambda: None)
    monkeypatch.setattr(tune, "with_parameters", lambda fn, **kw: fn)
    monkeypatch.setattr(tune, "with_resources", lambda fn, resources: fn)
    monkeypatch.setattr(tune, "Tuner", _GridTuner)
    return _GridTuner


def test_the_best_c_wins_on_validation_ties_go_to_the_smaller_c_and_failed_trials_are_ignored(grid_tuner, tmp_path):
    features, labels = _separable()
    grid_tuner.scores = {10.0: 0.7, 1.0: 0.9, 0.1: 0.9, 0.01: 0.5, 100.0: None}
    out = tmp_path / "runs"
    cfg = EvaluateConfig(embeddings=_table(tmp_path / "emb", features, labels), run_dir=str(out),
                         c_grid=[0.01, 0.1, 1.0, 10.0, 100.0], max_iter=200)
    scores = run_evaluate(cfg)
    assert grid_tuner.seen == {"grid": [0.01, 0.1, 1.0, 10.0, 100.0], "metric": "val_balanced_accuracy",
                               "mode": "max"}
    assert scores["C"] == 0.1 and scores["balanced_accuracy"] == 1.0 and scores["n_train"] + scores["n_test"] == 40
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
    assert run.data.metrics["best_C"] == 0.1 and run.data.tags["sslray.stage"] == "evaluate"
    assert run.info.run_name == "evaluate emb" and run.info.status == "FINISHED"  # named by the table's folder
    grid = client.get_metric_history(run.info.run_id, "grid_val_balanced_accuracy")
    assert [(m.step, m.value) for m in grid] == [(_c_step(c), grid_tuner.scores[c]) for c in (0.01, 0.1, 1.0, 10.0)]


def test_every_trial_failing_is_an_error(grid_tuner, tmp_path):
    features, labels = _separable()
    grid_tuner.scores = {1.0: None}
    cfg = EvaluateConfig(embeddings=_table(tmp_path / "emb", features, labels), run_dir=str(tmp_path / "runs"),
                         c_grid=[1.0])
    with pytest.raises(RuntimeError, match="every probe trial failed; first error: boom"):
        run_evaluate(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (run,) = client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
    assert run.info.status == "FAILED"


def test_grid_steps_are_ordered_non_negative_integers_by_log10_c():
    steps = [_c_step(c) for c in (1e-4, 1e-3, 0.5, 1.0, 10.0)]
    assert steps == sorted(steps) and steps[0] >= 0 and _c_step(1.0) == 1000 and _c_step(10.0) == 1100


@pytest.mark.parametrize("bad, message", [
    ({"embeddings": ""}, "embeddings: the embeddings table URL is required"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
    ({"c_grid": [0.1, 0.0]}, "c_grid must list positive"),
])
def test_bad_settings_are_refused_when_the_config_is_made(bad, message):
    with pytest.raises(ValueError, match=message):
        EvaluateConfig(**{"embeddings": "emb", **bad})
