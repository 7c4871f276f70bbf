"""The cluster files: the launcher config against Ray's own schema, the Kubernetes manifests by
kind, apiVersion, GPU requests and autoscaling fields, and nothing exposed without auth."""

import re

import pytest
import yaml

from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"
PUBLIC = {"0.0.0.0/0", "::/0"}


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


def _manifests(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((CLUSTER / name).read_text()) if doc]


def test_launcher_config_validates_against_rays_schema(launcher):
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(launcher)
    validate_config(prepare_config(launcher))  # as `ray up` fills it out


def test_launcher_has_a_cpu_head_and_gpu_workers_from_zero(launcher):
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))  # CPU head
    workers = {k: v for k, v in types.items() if k != launcher["head_node_type"]}
    assert {"gpu_1x", "gpu_4x"} <= set(workers)
    assert all(w["min_workers"] == 0 for w in workers.values())
    assert 0 < max(w["max_workers"] for w in workers.values()) <= launcher["max_workers"]
    assert launcher["idle_timeout_minutes"] > 0
    assert types["gpu_1x_spot"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert all("sslray-s3" in w["node_config"]["IamInstanceProfile"]["Arn"] for w in workers.values())
    setup = " ".join(launcher["setup_commands"])
    assert "pip install" in setup and "sslray" in setup


def test_launcher_keeps_the_dashboard_private_and_token_auth_on(launcher):
    head_start = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert all("RAY_AUTH_MODE=token" in c for c in launcher[commands] if "ray start" in c)
    for rule in launcher["provider"].get("security_group", {}).get("IpPermissions", []):
        opened = {r["CidrIp"] for r in rule.get("IpRanges", [])} | {r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])}
        assert not opened & PUBLIC, f"{rule} opens a port to the internet"


def test_raycluster_autoscales_a_gpu_group_from_zero():
    (cluster,) = _manifests("kuberay/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert spec["authOptions"]["mode"] == "token"
    assert tuple(int(x) for x in spec["rayVersion"].split(".")) >= (2, 52)  # token auth needs Ray 2.52+
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    groups = spec["workerGroupSpecs"]
    assert groups and all(g["minReplicas"] == 0 and g["replicas"] == 0 and g["maxReplicas"] >= 1 for g in groups)
    for group in groups:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        gpus = resources["limits"]["nvidia.com/gpu"]
        assert gpus >= 1 and resources["requests"]["nvidia.com/gpu"] == gpus


def test_rayjob_runs_a_pretraining_on_that_cluster():
    (job,) = _manifests("kuberay/rayjob.yaml")
    (cluster,) = _manifests("kuberay/raycluster.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    entrypoint = job["spec"]["entrypoint"]
    assert "jobs/pretrain.py" in entrypoint and "train.use_gpu=true" in entrypoint
    config = re.search(r"--config (\S+)", entrypoint).group(1)
    assert (ROOT / config.removeprefix("/opt/sslray/")).is_file()  # the image copies configs/ to /opt/sslray


def test_mlflow_server_has_postgres_s3_and_authentication():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _manifests("mlflow/mlflow.yaml")}
    deployment = docs[("Deployment", "mlflow")]
    args = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--app-name basic-auth" in args
    assert "--backend-store-uri \"postgresql://" in args and "--artifacts-destination s3://" in args
    assert "${POSTGRES_PASSWORD}" in args  # from a Secret, never written in the manifest
    assert docs[("Service", "mlflow")]["spec"]["type"] == "ClusterIP"
    assert all(d["spec"].get("type", "ClusterIP") == "ClusterIP" for (kind, _), d in docs.items() if kind == "Service")
    assert ("StatefulSet", "mlflow-postgres") in docs


def test_no_manifest_carries_a_literal_credential():
    for path in [*CLUSTER.rglob("*.yaml"), CLUSTER / "Dockerfile"]:
        text = path.read_text()
        assert not re.search(r"(?i)(password|secret|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{12,}", text), path
        assert "AKIA" not in text, path  # an AWS access key id


def test_dockerfile_installs_cuda_torch_and_sslray():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:[\d.]+-py311-gpu", text, re.M)
    assert "download.pytorch.org/whl/cu" in text and "pip install --no-cache-dir -e ." in text
    for folder in ("sslray", "jobs", "configs"):
        assert f"COPY --chown=ray:users {folder} ./{folder}" in text
