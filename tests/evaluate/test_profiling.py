"""``sslray evaluate --protocol profiling``: config checks, bad input refused before Ray, the published
results (metrics, skipped, one model per trial, best, pictures, MLflow lineage), and the LINCS plate on Tune."""

import json

import mlflow
import pytest

from sslray import storage
from sslray.cli import main
from sslray.config import load_config
from sslray.evaluate.profiling import ProfilingConfig, best_models, run_profiling
from sslray.evaluate.protocols import get_protocol
from tests.evaluate.profile_fixtures import LINCS, synthetic_screen

TWO_PIPELINES = {"as_given": [], "mad_robustize": [{"name": "mad_robustize", "by": "Metadata_Plate"}]}


def write_screen(tmp_path, **kwargs) -> str:
    df, _ = synthetic_screen(**kwargs)
    df["Metadata_control"] = df["Metadata_pert"] == "DMSO"
    url = str(tmp_path / "screen.parquet")
    df.to_parquet(url)
    return url


def test_profiling_is_a_registered_protocol_with_its_shipped_config():
    assert get_protocol("profiling").Config is ProfilingConfig
    cfg = load_config(ProfilingConfig, "configs/evaluate/profiling.yaml", ["embeddings=somewhere.csv.gz"])
    assert list(cfg.pipelines) == ["as_given", "mad_robustize", "spherize_mad_robustize", "standardize", "tvn"]
    assert cfg.aggregations == ["mean", "median"] and cfg.cpus_per_trial == 0.5 and cfg.input_name == "somewhere"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"embeddings": ""}, "embeddings: the profiles table URL is required"),
        ({"pipelines": {}}, "name at least one normalisation pipeline"),
        ({"pipelines": {"a/b": []}}, "may hold only letters, digits"),
        ({"pipelines": {"x": [{"name": "zscore"}]}}, "unknown normalisation step 'zscore'"),
        ({"aggregations": ["max"]}, "aggregations must list mean or median"),
        ({"cpus_per_trial": 0}, "trial resources must be positive"),
    ],
)
def test_bad_settings_are_refused_when_the_config_is_made(bad, message):
    with pytest.raises(ValueError, match=message):
        ProfilingConfig(**{"embeddings": "t.parquet", **bad})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"perturbation_column": "Metadata_compound"}, r"perturbation column\(s\) \['Metadata_compound'\]"),
        ({"control": "Metadata_pert == 'PBS'"}, "control query \"Metadata_pert == 'PBS'\" selects no profile"),
        ({"replicate_groups": ["Metadata_pert", "Metadata_dose"]}, r"replicate group column\(s\) \['Metadata_dose'\]"),
    ],
)
def test_bad_input_is_named_before_ray_starts(tmp_path, monkeypatch, change, message):
    monkeypatch.setattr("sslray.runtime.ensure_ray", lambda: pytest.fail("Ray started before the check"))
    url = write_screen(tmp_path)
    cfg = ProfilingConfig(
        **{"embeddings": url, "run_dir": str(tmp_path / "runs"), "perturbation_column": "Metadata_pert", **change}
    )
    with pytest.raises(ValueError, match=f"profiles table {url}: {message}"):
        run_profiling(cfg)


def test_results_hold_metrics_skipped_models_best_and_pictures(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(
        "sslray.evaluate.profiling.run_points",
        lambda trial, points, shared, resources, name, run_dir: [trial(p, **shared) for p in points],
    )
    url = write_screen(tmp_path, channels=("DNA", "ER"))
    runs = tmp_path / "runs"
    out = run_profiling(
        ProfilingConfig(
            embeddings=url,
            run_dir=str(runs),
            perturbation_column="Metadata_pert",
            moa_column=None,
            pipelines=TWO_PIPELINES,
            null_size=500,
            channel_trees=20,
        )
    )
    folder = runs / "results" / "profiling" / "screen"
    doc = json.loads((folder / "results.json").read_text())
    assert doc["protocol"] == "profiling" and doc["n_profiles"] == 36 and doc["metrics"] == out["metrics"]
    assert list(doc["models"]) == ["as_given/mean", "as_given/median", "mad_robustize/mean", "mad_robustize/median"]
    assert doc["skipped"] == {m: "moa_column is not set" for m in ("map_moa", "nsc_accuracy", "nscb_accuracy")}
    model = doc["models"]["mad_robustize/mean"]
    assert model["best_params"] == {"pipeline": "mad_robustize", "aggregation": "mean"}
    assert set(model["map_replicates"]) == {"mean", "sd", "folds", "unit"}
    assert doc["best"]["nsb_accuracy"]["mean"] == max(m["nsb_accuracy"]["mean"] for m in doc["models"].values())
    assert set(doc["channel_attribution"]["overall"]) == {"DNA", "ER"}
    files = {p.name for p in folder.iterdir()}
    assert {
        "results.md",
        "profiles_map.png",
        "map_vs_pvalue.png",
        "channel_attribution.png",
        "map_replicates.csv",
    } <= files


def test_best_takes_the_highest_mean_and_the_earlier_model_on_ties():
    models = {
        "a/mean": {"m": {"mean": 0.5}, "best_params": {}},
        "b/mean": {"m": {"mean": 0.7}, "best_params": {}},
        "c/mean": {"m": {"mean": 0.7}, "best_params": {}},
    }
    assert best_models(models) == {"m": {"model": "b/mean", "mean": 0.7}}


@pytest.mark.ray
@pytest.mark.realdata
def test_the_cli_scores_the_lincs_plate_on_tune(ray_session, test_data, tmp_path, capsys):
    table = test_data / LINCS
    runs = tmp_path / "runs"
    args = [
        "evaluate",
        "--protocol",
        "profiling",
        "--embeddings",
        str(table),
        f"run_dir={runs}",
        "perturbation_column=Metadata_broad_sample",
        "control=Metadata_broad_sample == 'DMSO'",
        "replicate_groups=[Metadata_broad_sample, Metadata_mg_per_ml]",
        "aggregations=[mean]",
        "null_size=2000",
        "pipelines={as_given: [], mad_robustize: [{name: mad_robustize, by: Metadata_Plate}]}",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    printed = json.loads(out[out.rindex('{\n  "metrics"') :])
    folder = runs / "results" / "profiling" / "SQ00015054_normalized_feature_select"
    doc = json.loads((folder / "results.json").read_text())
    assert doc["metrics"] == printed["metrics"] and doc["n_profiles"] == 384
    metrics = doc["metrics"]
    assert round(metrics["replicate_reproducibility"]["0.5"], 3) == 0.681
    assert round(metrics["replicate_reproducibility"]["0.95"], 3) == 0.458
    assert {
        "percent_replicating",
        "map_replicates",
        "map_moa",
        "fraction_active",
        "nsc_accuracy",
        "precision_at_k",
    } <= set(metrics)
    assert doc["skipped"]["nsb_accuracy"] == "the table has no batch_column column 'Metadata_batch'"
    assert set(doc["skipped"]) == {"nsb_accuracy", "nscb_accuracy"}
    assert list(doc["models"]) == ["as_given/mean", "mad_robustize/mean"]
    client = mlflow.MlflowClient(f"sqlite:///{runs}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("sslray").experiment_id])
    assert run.data.tags["sslray.protocol"] == "profiling" and run.data.tags["sslray.embeddings"] == str(table)
    assert run.data.metrics["as_given/mean/map_replicates"] == metrics["map_replicates"]
    assert {"results.json", "profiles_map.png", "map_vs_pvalue.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    assert storage.exists(str(folder / storage.SUCCESS_MARKER))
