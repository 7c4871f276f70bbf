"""Pretraining across two real Ray nodes, with checkpoints on S3 and tracking on an MLflow server.

The nodes are separate ``ray start`` processes on loopback (tests/servers.py); the job's
driver is a separate process that joins them through ``RAY_ADDRESS``, as a job on a cloud
cluster does. One run checks what a user of a multi-node cluster relies on: the trainer
places its workers on both nodes, checkpoints land on object storage and load from there,
and the run's MLflow page has the params, step metrics, throughput, checkpoint and lineage.
"""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from sslray.train.checkpoint import load_encoder
from tests.conftest import ROOT

pytestmark = pytest.mark.ray

_JOB = """
import json, sys
from sslray.config import from_dict
from sslray.train.config import PretrainConfig
from sslray.train.driver import run_pretrain
result = run_pretrain(from_dict(PretrainConfig, json.loads(sys.argv[1])))
print("RESULT " + json.dumps({"checkpoint": result.checkpoint, "run_id": result.run_id}))
"""


def test_two_nodes_train_one_model_with_checkpoints_on_s3(ray_cluster, mlflow_server, s3_server, tiny_store):
    steps = 6
    config = {
        "store": tiny_store.url, "out": f"{s3_server}/runs", "name": "two-nodes",
        "model": {"name": "vit_tiny_patch16_224",
                  "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}},
        "method": {"name": "dino", "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
                   "views": {"global_size": 32, "local_size": 16, "n_local": 2}},
        "train": {"steps": steps, "batch_size": 8, "num_workers": 2, "cpus_per_worker": 1.0,
                  "placement_strategy": "STRICT_SPREAD", "log_every": 2, "checkpoint_every": 3},
        "tracking": {"uri": mlflow_server.uri},
    }
    job = subprocess.run([sys.executable, "-c", _JOB, json.dumps(config)], cwd=ROOT, env=ray_cluster.client_env(),
                         capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stderr[-4000:]
    result = json.loads(job.stdout.split("RESULT ", 1)[1])
    assert "pretraining: steps 0 -> 6" in job.stderr  # the one-screen summary

    assert result["checkpoint"].startswith(f"{s3_server}/runs/checkpoints/two-nodes/checkpoint_")
    _, meta = load_encoder(result["checkpoint"])  # read back from object storage
    assert meta.step == steps

    client = mlflow.MlflowClient(mlflow_server.uri)
    run = client.get_run(result["run_id"])
    workers = json.loads(run.data.tags["sslray.workers"])
    assert [w["rank"] for w in workers] == ["0", "1"]
    assert len({w["node"] for w in workers}) == 2, f"both workers ran on one node: {workers}"
    assert run.info.status == "FINISHED" and run.data.params["train.num_workers"] == "2"
    assert run.data.tags["sslray.store"] == tiny_store.url and run.data.tags["sslray.manifest_sha256"]
    assert run.data.tags["sslray.checkpoint"] == result["checkpoint"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 3, 4, 6]
    assert {"images_per_s", "images_per_s_per_worker", "data_wait_fraction", "lr"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")} == {
        "checkpoint/encoder.safetensors", "checkpoint/sslray.json"}
    throughput = json.loads(Path(client.download_artifacts(run.info.run_id, "throughput.json")).read_text())
    assert [w["steps"] for w in throughput["workers"]] == [steps - 1, steps - 1]  # the first is start-up
