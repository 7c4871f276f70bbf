"""Autoscaling from zero GPU nodes and back, with Ray's fake multi-node provider.

The worker node types are those of cluster/aws.yaml (same names, GPU counts and min/max
bounds, CPUs scaled down to fit this machine); the provider starts each "node" as local
processes. A job's GPU requests must bring up nodes of the smallest type that fits, and the
nodes must go once idle (here after 6 s; cluster/aws.yaml waits 10 minutes).
"""

import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import ROOT
from tests.servers import alive_nodes, start_ray_cluster, stop_ray_cluster, wait_until

pytestmark = pytest.mark.ray

GPUS_PER_INSTANCE = {"g5.2xlarge": 1, "g5.12xlarge": 4}  # a new GPU node type in aws.yaml belongs here too


def fake_config(launcher: dict, max_per_type: int = 2) -> dict:
    """cluster/aws.yaml's node types for the fake_multinode provider."""
    workers = {}
    for name, node in launcher["available_node_types"].items():
        if name == launcher["head_node_type"] or node.get("max_workers", 0) == 0:
            continue
        gpus = GPUS_PER_INSTANCE[node["node_config"]["InstanceType"]]
        workers[name] = {"resources": {"CPU": 1, "GPU": gpus, "object_store_memory": 80 * 1024**2},
                         "node_config": {}, "min_workers": node.get("min_workers", 0),
                         "max_workers": min(node["max_workers"], max_per_type)}
    return {
        "cluster_name": "sslray-fake", "max_workers": 3, "upscaling_speed": launcher["upscaling_speed"],
        "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "available_node_types": {"ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
                                 **workers},
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
    }


_DRIVER = """
import json, os, ray
ray.init()

@ray.remote(num_gpus=1)
def one_gpu():
    import time; time.sleep(2)
    return os.environ.get("RAY_NODE_TYPE_NAME")

@ray.remote(num_gpus=4)
def four_gpus():
    return os.environ.get("RAY_NODE_TYPE_NAME")

small = sorted(ray.get([one_gpu.remote(), one_gpu.remote()]))  # first two 1-GPU tasks at once, then one of 4
print("TYPES " + json.dumps({"one_gpu": small, "four_gpus": ray.get(four_gpus.remote())}))
"""


def test_gpu_requests_scale_worker_nodes_up_from_zero_and_back_down(tmp_path):
    launcher = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    assert all(node.get("min_workers", 0) == 0 for name, node in launcher["available_node_types"].items()
               if name != launcher["head_node_type"]), "GPU node types must scale from zero"
    cluster = start_ray_cluster(tmp_path, nodes=1, cpus_per_node=1, object_store_bytes=80 * 1024**2,
                                autoscaling_config=fake_config(launcher))
    try:
        time.sleep(5)  # a few autoscaler rounds: with no demand, nothing starts
        assert alive_nodes(cluster) == 1
        job = subprocess.run([sys.executable, "-c", _DRIVER], env=cluster.client_env(), capture_output=True,
                             text=True, timeout=300)
        assert job.returncode == 0, job.stderr[-3000:]
        # two 1-GPU tasks at once: two gpu_1x nodes; a 4-GPU task: the node type that has 4
        ran_on = json.loads(job.stdout.split("TYPES ", 1)[1].splitlines()[0])  # autoscaler lines may follow
        assert ran_on == {"one_gpu": ["gpu_1x", "gpu_1x"], "four_gpus": "gpu_4x"}
        wait_until(lambda: alive_nodes(cluster) == 1, "scale-down of idle GPU nodes", timeout=120)
    finally:
        stop_ray_cluster(cluster)
