"""Real servers on loopback for tests: an S3-compatible store (moto), a two-node Ray cluster
started as separate ``ray start`` processes, and an ``mlflow server``.

Each runs in its own process group, so stopping it never touches another Ray (the
session's in-process one) on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} was not ready after {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen

    @property
    def env(self) -> dict[str, str]:
        """What an S3 client needs to reach it (fake credentials: moto accepts any)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1"}


def start_s3(log_dir: Path, bucket: str) -> S3Server:
    import boto3

    port = free_port()
    proc = _spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], dict(os.environ),
                  log_dir / "moto.log")
    server = S3Server(f"http://127.0.0.1:{port}", proc)
    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    wait_until(lambda: client.create_bucket(Bucket=bucket) is not None, "moto S3 server", 60, proc)
    return server


@dataclass
class MlflowServer:
    uri: str
    proc: subprocess.Popen


def start_mlflow(root: Path) -> MlflowServer:
    """``mlflow server`` with a SQLite backend and a local artifact root, served over HTTP."""
    import urllib.request

    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    cmd = [shutil.which("mlflow") or "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
           str(root / "artifacts"), "--workers", "1"]
    proc = _spawn(cmd, dict(os.environ), root / "mlflow-server.log")
    uri = f"http://127.0.0.1:{port}"
    wait_until(lambda: urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200, "mlflow server", 120, proc)
    return MlflowServer(uri, proc)


@dataclass
class RayCluster:
    """A head and worker nodes on loopback, each its own ``ray start --block`` process."""

    gcs_address: str
    dashboard_url: str
    env: dict[str, str]  # what a client of this cluster needs: auth token, S3 endpoint
    temp_dirs: list[str]
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "RAY_ADDRESS": self.gcs_address}


def _node_ports() -> list[str]:
    """Every port a node listens on, chosen free, so two nodes on one host never collide."""
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
    args = []
    for name in names:
        args += [name, str(free_port())]
    return args


def start_ray_cluster(root: Path, nodes: int = 2, cpus_per_node: int = 2, env: dict[str, str] | None = None,
                      object_store_bytes: int = 150 * 1024**2, autoscaling_config: dict | None = None) -> RayCluster:
    """Token authentication stays on, as on a real cluster: every client must carry the token.

    With ``autoscaling_config`` (a cluster config for Ray's ``fake_multinode`` provider) the head
    runs the autoscaler, which starts and stops worker nodes as local processes on demand;
    ``nodes`` then counts only the head.
    """
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    root.mkdir(parents=True, exist_ok=True)
    cluster_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), **(env or {})}
    node_env = {**os.environ, **cluster_env, "RAY_USAGE_STATS_ENABLED": "0"}
    gcs_port, dashboard_port = free_port(), free_port()
    # One temp dir per node, as each node of a real cluster has its own disk (nodes sharing one
    # would unpack a job's working_dir over each other's); short, for Ray's 107-byte socket paths.
    temp_dirs = [tempfile.mkdtemp(prefix="ray", dir="/tmp") for _ in range(nodes)]
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node),
              "--object-store-memory", str(object_store_bytes), "--disable-usage-stats"]
    autoscaling = []
    if autoscaling_config is not None:
        config = json.loads(json.dumps(autoscaling_config))
        config["provider"]["gcs_address"] = f"127.0.0.1:{gcs_port}"  # the fake provider's nodes join here
        (root / "autoscaling.json").write_text(json.dumps(config))
        autoscaling = ["--autoscaling-config", str(root / "autoscaling.json")]
        node_env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    head = _spawn([ray_bin, "start", "--head", "--port", str(gcs_port), "--include-dashboard", "true", *autoscaling,
                   "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
                   "--ray-client-server-port", str(free_port()), "--temp-dir", temp_dirs[0],
                   *common, *_node_ports()], node_env, root / "head.log")
    cluster = RayCluster(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}", cluster_env, temp_dirs, [head])
    try:
        wait_until(lambda: alive_nodes(cluster) >= 1, "the Ray head", 120, head)
        for i in range(1, nodes):
            cluster.nodes.append(_spawn([ray_bin, "start", "--address", cluster.gcs_address, "--temp-dir",
                                         temp_dirs[i], *common, *_node_ports()], node_env, root / f"worker-{i}.log"))
        wait_until(lambda: alive_nodes(cluster) >= nodes, f"{nodes} Ray nodes", 120, cluster.nodes[-1])
    except BaseException:
        stop_ray_cluster(cluster)
        raise
    return cluster


def alive_nodes(cluster: RayCluster) -> int:
    """Alive nodes, asked of the dashboard's REST API with the cluster's token."""
    import urllib.request

    request = urllib.request.Request(f"{cluster.dashboard_url}/nodes?view=summary",
                                     headers={"Authorization": f"Bearer {cluster.env['RAY_AUTH_TOKEN']}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        summary = json.load(response)["data"]["summary"]
    return sum(1 for node in summary if node["raylet"]["state"] == "ALIVE")


def stop_ray_cluster(cluster: RayCluster) -> None:
    for proc in reversed(cluster.nodes):
        stop(proc, timeout=5)  # a head node ignores SIGTERM for 20 s or more; nothing of it needs to survive
    for temp_dir in cluster.temp_dirs:
        shutil.rmtree(temp_dir, ignore_errors=True)
