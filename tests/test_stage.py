"""The shared stage lifecycle: tracked runs (nested, across processes), atomic publishing, old keys.

Every test uses a SQLite MLflow store under tmp_path; no Ray.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import mlflow
import pytest

from sslray import storage
from sslray.config import ConfigError, from_dict, load_config
from sslray.stage import PARENT_RUN_ENV, input_name, pipeline_run, publishing, run_name, tracked_run
from sslray.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, TrackingConfig, get_experiment_id

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)


def _runs(run_dir: Path, experiment: str = "sslray") -> dict[str, mlflow.entities.Run]:
    client = mlflow.MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    found = client.search_runs(client.get_experiment_by_name(experiment).experiment_id)
    return {r.info.run_name: r for r in found}


def test_a_run_is_named_by_stage_and_input_logs_its_config_redacted_and_finishes(tmp_path):
    config = {"store": "s3://AKIAXXX:supersecret@host/b", "steps": 3}
    with tracked_run(TrackingConfig(), str(tmp_path), stage="embed", input="ssl", config=config,
                     tags={"sslray.method": "dino"}) as run:
        run.log_metrics({"n_rows": 5})
    found = _runs(tmp_path)["embed ssl"]
    assert found.info.status == "FINISHED" and found.data.metrics["n_rows"] == 5
    assert found.data.tags["sslray.stage"] == "embed" and found.data.tags["sslray.input"] == "ssl"
    assert found.data.tags["sslray.method"] == "dino" and "mlflow.parentRunId" not in found.data.tags
    assert found.data.params["steps"] == "3" and "supersecret" not in found.data.params["store"]


def test_an_exception_marks_the_run_failed_and_propagates(tmp_path):
    with pytest.raises(KeyError, match="boom"), tracked_run(TrackingConfig(), str(tmp_path), stage="evaluate",
                                                           input="ssl"):
        raise KeyError("boom")
    assert _runs(tmp_path)["evaluate ssl"].info.status == "FAILED"


def test_stages_inside_a_pipeline_nest_under_it_and_the_environment_is_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    with pipeline_run(TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db"), str(tmp_path), name="quickstart",
                      input="dino") as parent:
        assert os.environ[PARENT_RUN_ENV] == parent.run_id and os.environ["MLFLOW_TRACKING_URI"] == parent.uri
        for name in ("ssl", "random_init"):
            with tracked_run(TrackingConfig(), str(tmp_path / "elsewhere"), stage="embed", input=name):
                pass
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db" and PARENT_RUN_ENV not in os.environ
    runs = _runs(tmp_path)
    assert set(runs) == {"quickstart dino", "embed ssl", "embed random_init"}
    assert {runs[n].data.tags.get("mlflow.parentRunId") for n in ("embed ssl", "embed random_init")} == {
        parent.run_id}
    assert runs["quickstart dino"].info.status == "FINISHED"


def test_a_stage_in_another_process_nests_under_the_parent_named_in_the_environment(tmp_path):
    with pipeline_run(TrackingConfig(), str(tmp_path), name="job", input="stages") as parent:
        code = ("from sslray.stage import tracked_run\n"
                "with tracked_run(None, None, stage='ingest', input='cells'):\n    pass\n")
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ), cwd=ROOT, timeout=120)
    child = _runs(tmp_path)["ingest cells"]
    assert child.data.tags["mlflow.parentRunId"] == parent.run_id and child.info.status == "FINISHED"


def test_a_stage_without_tracking_settings_outside_a_pipeline_logs_nothing(tmp_path):
    with tracked_run(None, None, stage="ingest", input="cells") as run:
        run.log_metrics({"n_tiles": 1})
        run.set_tags({"a": "b"})
    assert run.run_id is None and not (tmp_path / "mlflow.db").exists()


def test_a_resume_marker_reopens_the_same_run(tmp_path):
    marker = str(tmp_path / "checkpoints" / "p" / "mlflow_run.json")
    for _ in range(2):
        with tracked_run(TrackingConfig(), str(tmp_path), stage="pretrain", input="p", resume_marker=marker) as run:
            run.log_metrics({"loss": 1.0})
    assert len(_runs(tmp_path)) == 1 and json.loads(Path(marker).read_text())["run_id"] == run.run_id


def test_new_and_existing_experiments_are_marked_as_model_training(tmp_path):
    with tracked_run(TrackingConfig(), str(tmp_path), stage="embed", input="x"):
        pass
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_experiment_by_name("sslray").tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    old = client.create_experiment("older")  # made before sslray set the tag
    assert get_experiment_id(f"sqlite:///{tmp_path}/mlflow.db", "older", str(tmp_path)) == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_publishing_moves_the_output_into_place_with_its_record(tmp_path):
    url = str(tmp_path / "table")
    with publishing(url, kind="embeddings", what="embeddings table") as output:
        Path(output.staging, "part-0.parquet").write_bytes(b"x")
        output.info["n_rows"] = 1
    assert storage.is_complete(url) and (Path(url) / "part-0.parquet").read_bytes() == b"x"
    assert storage.read_json(f"{url}/_SUCCESS")["n_rows"] == 1


def test_a_failed_publication_removes_its_staging_and_leaves_the_destination_untouched(tmp_path):
    url = str(tmp_path / "table")
    with publishing(url, kind="embeddings", what="embeddings table") as output:
        Path(output.staging, "part-0.parquet").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="embedding failed"), \
            publishing(url, kind="embeddings", what="embeddings table", overwrite=True) as output:
        Path(output.staging, "part-0.parquet").write_bytes(b"new")
        raise RuntimeError("embedding failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table"]
    assert (Path(url) / "part-0.parquet").read_bytes() == b"old" and storage.is_complete(url)


def test_a_failed_resumable_publication_keeps_its_staging_for_the_rerun_to_go_on_from(tmp_path):
    url = str(tmp_path / "table")
    with pytest.raises(RuntimeError, match="killed"), \
            publishing(url, kind="embeddings", what="embeddings table", resumable=True) as output:
        Path(output.staging, "part-0.parquet").write_bytes(b"done before the failure")
        raise RuntimeError("killed")
    assert not Path(url).exists()
    with publishing(url, kind="embeddings", what="embeddings table", resumable=True) as output:
        assert Path(output.staging, "part-0.parquet").read_bytes() == b"done before the failure"
    assert storage.is_complete(url) and (Path(url) / "part-0.parquet").exists()


def test_publishing_refuses_a_finished_output_without_overwrite_before_writing(tmp_path):
    url = str(tmp_path / "table")
    with publishing(url, kind="embeddings", what="embeddings table"):
        pass
    with pytest.raises(FileExistsError), publishing(url, kind="embeddings", what="embeddings table"):
        pytest.fail("the block must not run")


def test_run_and_input_names():
    assert run_name("embed", "ssl") == "embed ssl" and input_name("s3://b/embeddings/ssl/") == "ssl"


@dataclass
class _Renamed:
    run_dir: str = "runs"
    out: str = ""
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"old_dir": "run_dir"}


def test_an_old_config_key_maps_to_its_new_name_with_a_one_line_warning(caplog):
    assert from_dict(_Renamed, {"old_dir": "r"}).run_dir == "r"
    assert [r.getMessage() for r in caplog.records] == ["config key old_dir is now run_dir; the old name will go"]
    with pytest.raises(ConfigError, match="old_dir and run_dir are both set"):
        from_dict(_Renamed, {"old_dir": "r", "run_dir": "s"})


@pytest.mark.parametrize("stage", ["pretrain", "evaluate"])
def test_out_is_the_old_name_of_the_run_directory_in_pretrain_and_evaluate(tmp_path, stage, caplog):
    from sslray.evaluate.run import EvaluateConfig
    from sslray.train.config import PretrainConfig

    cls, base = {"pretrain": (PretrainConfig, ["store=s"]), "evaluate": (EvaluateConfig, ["embeddings=e"])}[stage]
    assert load_config(cls, None, [*base, f"out={tmp_path}"]).run_dir == str(tmp_path)
    assert "config key out is now run_dir" in caplog.text
