"""``sslray submit``: what travels with a job, and a real submission to a two-node cluster."""

import json
import shutil
import subprocess

import mlflow
import pytest

from sslray.submit import SubmitConfig, SubmitError, entrypoint, resolve_address, runtime_env, stages
from tests.conftest import ROOT


def test_every_stage_has_a_job_entrypoint():
    assert stages() == ["aggregate", "embed", "evaluate", "ingest", "pretrain", "profile", "quickstart"]
    with pytest.raises(SubmitError, match="unknown stage 'train'.*pretrain"):
        SubmitConfig(stage="train")


def test_the_entrypoint_passes_arguments_through_quoted():
    cfg = SubmitConfig(stage="pretrain", args=["--config", "configs/methods/dino.yaml", "data.where.split=a b"])
    assert entrypoint(cfg) == "python -P jobs/pretrain.py --config configs/methods/dino.yaml 'data.where.split=a b'"


def test_a_job_submitted_inside_a_pipeline_carries_the_parent_run(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("SSLRAY_PARENT_RUN_ID", "abc123")
    assert runtime_env(SubmitConfig(stage="embed"))["env_vars"]["SSLRAY_PARENT_RUN_ID"] == "abc123"


def test_credentials_never_travel_with_a_job(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    env = runtime_env(SubmitConfig(stage="quickstart", env={"OMP_NUM_THREADS": "4"}))
    assert env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "AWS_ENDPOINT_URL": "http://minio:9000",
                               "OMP_NUM_THREADS": "4"}
    assert env["working_dir"] == str(ROOT) and ".venv" in env["excludes"]
    with pytest.raises(SubmitError, match="AWS_SECRET_ACCESS_KEY"):
        SubmitConfig(stage="quickstart", env={"AWS_SECRET_ACCESS_KEY": "x"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:pw@mlflow:5000")
    with pytest.raises(SubmitError, match="carries credentials"):
        runtime_env(SubmitConfig(stage="quickstart"))


def test_address_defaults_to_the_forwarded_dashboard(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a GCS address is not the Jobs API
    assert resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert resolve_address(None) == "http://head:8265" and resolve_address("http://x:1") == "http://x:1"


def _sslray(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    exe = shutil.which("sslray") or str(ROOT / ".venv" / "bin" / "sslray")
    return subprocess.run([exe, "submit", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.ray
def test_submitted_quickstart_runs_on_the_cluster_and_lands_in_the_mlflow_server(ray_cluster, mlflow_server,
                                                                                   tmp_path):
    env = {**ray_cluster.client_env(), "MLFLOW_TRACKING_URI": mlflow_server.uri}
    out = tmp_path / "qs"
    job = _sslray("quickstart", "--address", ray_cluster.dashboard_url, "--out", str(out), "--steps", "3", env=env)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "linear probe balanced accuracy" in job.stdout  # the job's own output, streamed back
    assert "SUCCEEDED" in job.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracking_uri"] == mlflow_server.uri
    client = mlflow.MlflowClient(mlflow_server.uri)
    runs = client.search_runs([client.get_experiment_by_name("sslray").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    pretrain = by_name["pretrain quickstart-dino"]
    assert pretrain.data.tags["sslray.store"].startswith(str(out))
    assert pretrain.info.status == "FINISHED" and "loss" in pretrain.data.metrics
    # the job is one pipeline run with a nested run per stage, all in the cluster's MLflow server
    parent = by_name["quickstart dino"].info.run_id
    stages = {"ingest data", "pretrain quickstart-dino", "embed ssl", "embed random_init", "evaluate ssl",
              "evaluate random_init"}
    assert stages <= set(by_name)
    assert all(by_name[name].data.tags.get("mlflow.parentRunId") == parent for name in stages)


@pytest.mark.ray
def test_a_failing_job_exits_non_zero_and_no_wait_prints_the_job_id(ray_cluster, tmp_path):
    env = ray_cluster.client_env()
    failed = _sslray("pretrain", "--address", ray_cluster.dashboard_url, "--config", str(tmp_path / "missing.yaml"),
                     env=env, timeout=300)
    assert failed.returncode == 1 and "FAILED" in failed.stderr
    assert "missing.yaml" in failed.stdout + failed.stderr  # the job's error, streamed back
    queued = _sslray("evaluate", "--no-wait", "--submission-id", "sslray-test-no-wait", "--address",
                     ray_cluster.dashboard_url, "--help", env=env, timeout=120)
    assert queued.returncode == 0 and queued.stdout.strip() == "sslray-test-no-wait"
