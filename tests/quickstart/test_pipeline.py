"""The quickstart's wiring: one MLflow parent run around its stages, the configs it hands them.

The stages themselves are replaced (no Ray); the real run is in tests/test_pipeline.py.
"""

import json
from pathlib import Path

import mlflow
import pytest

from sslray.quickstart import pipeline
from sslray.quickstart.pipeline import QuickstartConfig, run_quickstart
from sslray.quickstart.recipe import load_recipe
from sslray.quickstart.summary import ProbeScores, QuickstartSummary
from sslray.stage import tracked_run
from sslray.tracking import TrackingConfig


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


def _one_stage(cfg, recipe, out) -> QuickstartSummary:
    """A stand-in for the stages: one tracked stage run, as run_embed opens it."""
    with tracked_run(TrackingConfig(), str(out), stage="embed", input="ssl"):
        pass
    return QuickstartSummary(model="ssl", scores=ProbeScores(0.5, 0.7), baseline="random_init",
                             baseline_scores=ProbeScores(0.25, 0.5), tracking_uri=f"sqlite:///{out}/mlflow.db",
                             n_tiles=8, method=cfg.method, checkpoint="c", steps=3, seconds=0.0)


def _runs(out) -> dict:
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    return {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("sslray").experiment_id)}


def test_the_stages_run_nested_in_one_parent_run_that_keeps_the_summary(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "_stages", _one_stage)
    summary = run_quickstart(QuickstartConfig(run_dir=str(tmp_path / "qs")))
    runs = _runs(tmp_path / "qs")
    parent, child = runs["quickstart dino"], runs["embed ssl"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and parent.info.status == "FINISHED"
    assert parent.data.tags["sslray.stage"] == "quickstart" and parent.data.params["method"] == "dino"
    on_disk = json.loads((tmp_path / "qs" / "summary.json").read_text())
    assert on_disk == summary.to_json() and summary.seconds >= 0
    logged = mlflow.MlflowClient(f"sqlite:///{tmp_path}/qs/mlflow.db").download_artifacts(
        parent.info.run_id, "summary.json", str(tmp_path))
    assert json.loads(Path(logged).read_text()) == on_disk


def test_a_failing_stage_fails_the_parent_run(monkeypatch, tmp_path):
    def broken(cfg, recipe, out):
        raise RuntimeError("pretraining diverged")

    monkeypatch.setattr(pipeline, "_stages", broken)
    with pytest.raises(RuntimeError, match="pretraining diverged"):
        run_quickstart(QuickstartConfig(run_dir=str(tmp_path / "qs")))
    assert _runs(tmp_path / "qs")["quickstart dino"].info.status == "FAILED"
    assert not (tmp_path / "qs" / "summary.json").exists()


def test_an_unknown_method_fails_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="no recipe for method"):
        run_quickstart(QuickstartConfig(run_dir=str(tmp_path / "qs"), method="nope"))
    assert not (tmp_path / "qs" / "mlflow.db").exists()


def test_the_tracking_overrides_set_the_pipeline_runs_tracking():
    cfg = QuickstartConfig(overrides=["tracking.experiment=mine", "train.steps=3"])
    assert pipeline.quickstart_tracking(cfg) == TrackingConfig(experiment="mine")


def test_the_pretrain_config_runs_in_the_quickstart_folder_with_the_overrides(tiny_store, tmp_path):
    cfg = QuickstartConfig(run_dir=str(tmp_path), steps=7, overrides=["train.seed=5"])
    pretrain = pipeline.pretrain_config(cfg, load_recipe("dino"), tmp_path, tiny_store)
    assert pretrain.run_dir == str(tmp_path) and pretrain.store == tiny_store.url
    assert pretrain.train.steps == 7 and pretrain.train.seed == 5 and pretrain.method_name == "dino"
