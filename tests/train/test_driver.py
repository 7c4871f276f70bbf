"""The pretraining driver's glue without a cluster: its MLflow run (named, tagged, reopened on a
resubmission), the checkpoint URL Ray hands back, where checkpoints go.

The whole run on Ray Train is in tests/test_pipeline.py and tests/train/test_fault_tolerance.py.
"""

from types import SimpleNamespace

import mlflow
import pytest

from sslray.config import from_dict
from sslray.train import driver
from sslray.train.config import PretrainConfig


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SSLRAY_PARENT_RUN_ID", raising=False)


def _cfg(run_dir, name="p") -> PretrainConfig:
    return from_dict(PretrainConfig, {"store": "s", "run_dir": str(run_dir), "name": name})


PLAN = SimpleNamespace(data=SimpleNamespace(lineage=SimpleNamespace(store="file:///s", manifest_sha256="abc")))


def test_the_run_is_named_by_its_name_tagged_with_its_data_and_reopened_by_a_resubmission(tmp_path):
    for _ in range(2):  # the second attempt: same run_dir, same name
        with driver._tracked(_cfg(tmp_path), PLAN) as run:
            run.log_metrics({"loss": 1.0})
    with driver._tracked(_cfg(tmp_path, name="other"), PLAN):
        pass
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = {r.info.run_name: r for r in client.search_runs(client.get_experiment_by_name("sslray").experiment_id)}
    assert set(runs) == {"pretrain p", "pretrain other"}
    tags = runs["pretrain p"].data.tags
    assert tags["sslray.stage"] == "pretrain" and tags["sslray.method"] == "dino"
    assert tags["sslray.manifest_sha256"] == "abc" and tags["sslray.store"] == "file:///s"
    assert len(client.get_metric_history(runs["pretrain p"].info.run_id, "loss")) == 2
    assert (tmp_path / "checkpoints" / "p" / "mlflow_run.json").is_file()


def test_a_failed_attempt_marks_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError), driver._tracked(_cfg(tmp_path), PLAN):
        raise RuntimeError("worker group died")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs(client.get_experiment_by_name("sslray").experiment_id)
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("fs, path, url", [
    ("S3FileSystem", "bucket/runs/checkpoint_1", "s3://bucket/runs/checkpoint_1"),
    ("GcsFileSystem", "bucket/checkpoint_1", "gs://bucket/checkpoint_1"),
    ("LocalFileSystem", "/runs/checkpoint_1", "/runs/checkpoint_1"),
])
def test_rays_checkpoint_becomes_a_url(fs, path, url):
    checkpoint = SimpleNamespace(filesystem=type(fs, (), {})(), path=path)
    assert driver._checkpoint_url(checkpoint) == url


def test_training_without_a_checkpoint_is_an_error():
    with pytest.raises(RuntimeError, match="without a checkpoint"):
        driver._checkpoint_url(None)


def test_checkpoints_live_under_the_run_directory(tmp_path):
    assert driver.checkpoint_root(str(tmp_path)) == f"{tmp_path}/checkpoints"
    assert driver.checkpoint_root("s3://bucket/runs") == "s3://bucket/runs/checkpoints"
