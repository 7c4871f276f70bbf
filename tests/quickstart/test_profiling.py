"""``sslray quickstart --profiling``: its recipe, its overrides, its summary, and one small real run.

The end-to-end run is sized down (2 plates of 64-px sites, 4 pretraining steps): it checks the
wiring and that every stage published its artifact, not that SSL wins (the README has the full run).
"""

import json
from pathlib import Path

import mlflow
import pytest

from sslray import storage
from sslray.cli import main
from sslray.data.synthetic_screen import ScreenSpec
from sslray.methods import METHODS
from sslray.quickstart.profiling import (
    ProfilingSummary,
    load_profiling_recipe,
    numbers,
    split_overrides,
)
from sslray.quickstart.recipe import load_recipe


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


def test_the_recipe_names_a_method_with_a_quickstart_recipe_and_a_valid_screen():
    recipe = load_profiling_recipe()
    assert recipe.method in METHODS.names() and load_recipe(recipe.method).pretrain
    assert ScreenSpec(**recipe.screen).batches == 2


def test_overrides_go_to_their_stage_and_the_rest_to_pretraining():
    stages, pretrain = split_overrides(["screen.sites=1", "train.steps=3", "profile.level=site",
                                        "evaluate.null_size=50"])
    assert stages == {"screen": {"sites": 1}, "profile": {"level": "site"}, "evaluate": {"null_size": 50}}
    assert pretrain == ["train.steps=3"]


def test_the_summary_keeps_number_metrics_and_says_by_how_much_ssl_differs():
    kept = numbers({"nsb_accuracy": 0.61234, "replicate_reproducibility": {"0.5": 0.7}, "replicate_maps": [{}],
                    "skipped_reason": "none"})
    assert kept == {"nsb_accuracy": 0.6123, "replicate_reproducibility": {"0.5": 0.7}}
    scores = {"ssl": {**kept, "map_moa": 0.9}, "random_init": {"nsb_accuracy": 0.25, "map_moa": 0.5}}
    summary = ProfilingSummary(scores=scores,
                               tracking_uri="https://user:secret@mlflow.example", n_tiles=8, n_wells=4, method="m",
                               checkpoint="c", steps=3, seconds=1.0)
    doc = summary.to_json()
    assert doc["difference"] == {"nsb_accuracy": 0.3623, "map_moa": 0.4}
    assert doc["ssl"]["replicate_reproducibility"] == {"0.5": 0.7} and "secret" not in json.dumps(doc)
    assert "nsb_accuracy ssl 0.612 vs random_init 0.250" in summary.headline()


def test_the_profiling_quickstart_refuses_options_of_the_tile_quickstart(capsys):
    assert main(["quickstart", "--profiling", "--data", "somewhere"]) != 0
    assert "--data is not supported" in capsys.readouterr().err


def _published(url: Path) -> bool:
    return storage.is_complete(str(url))


@pytest.mark.ray
def test_a_small_profiling_quickstart_publishes_every_stage_and_summarises_both_encoders(ray_session, tmp_path):
    out = tmp_path / "qs"
    code = main(["quickstart", "--profiling", "--out", str(out), "--steps", "4", "screen.plates_per_batch=1",
                 "screen.sites=1", "screen.size=64", "train.batch_size=8", "evaluate.null_size=100",
                 "evaluate.replicating_null=50"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    for encoder in ("ssl", "random_init"):
        assert {"nsb_accuracy", "map_replicates", "map_moa"} <= set(summary[encoder])
        assert _published(out / "embeddings" / encoder) and _published(out / "profiles" / encoder)
        assert (out / "results" / "profiling" / encoder / "results.json").is_file()
    assert set(summary["difference"]) >= {"nsb_accuracy", "map_replicates", "map_moa"}
    assert summary["n_tiles"] == 24 and summary["n_wells"] == 24 and summary["steps"] == 4
    assert _published(out / "store-screen") and (out / "screen" / "platemap.csv").is_file()
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    runs = {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("sslray").experiment_id)}
    parent = runs.pop("quickstart profiling")
    expected = {"ingest screen", "embed ssl", "embed random_init", "profile ssl", "profile random_init",
                "evaluate ssl", "evaluate random_init"}
    assert expected <= set(runs) and any(name.startswith("pretrain ") for name in runs)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs.values())
    assert parent.info.status == "FINISHED"
