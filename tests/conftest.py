"""Shared fixtures: tiny generated data, one Ray instance per session, real test images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "sslray-test"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session; Ray start-up costs seconds on 2 cores.

    More logical CPUs than cores, so Ray Data read tasks never wait behind a Train worker
    or Tune trial holding the only CPU (docs/stack_facts.md).
    """
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=4, object_store_memory=256 * 1024**2, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The real sample images (../shared/data); tests using it skip cleanly when absent."""
    path = Path(os.environ.get("SSLRAY_TEST_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real test data not found at {path} (set SSLRAY_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def synthetic_images(tmp_path_factory) -> tuple[Path, Path]:
    """A small synthetic labelled set: 4 classes x 6 fields of 128 px, with labels.csv."""
    from sslray.data.synthetic import SyntheticSpec, write_dataset

    root = tmp_path_factory.mktemp("synthetic")
    labels = write_dataset(root, SyntheticSpec(images_per_class=6))
    return root, labels


@pytest.fixture(scope="session")
def tiny_store(synthetic_images, tmp_path_factory):
    from sslray.data.ingest import IngestConfig, ingest_folder

    root, labels = synthetic_images
    dest = tmp_path_factory.mktemp("stores") / "tiny"
    return ingest_folder(IngestConfig(workers=0, src=str(root), out=str(dest), labels=str(labels), tile_size=64,
                                      channels=["DNA", "cytoplasm"]))


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3-compatible server (moto) on loopback, with one bucket, for the whole session."""
    pytest.importorskip("moto")
    from tests.servers import start_s3, stop

    server = start_s3(tmp_path_factory.mktemp("moto"), BUCKET)
    yield server
    stop(server.proc)


@pytest.fixture
def s3_server(s3_endpoint, monkeypatch):
    """``s3://BUCKET``, with this process's S3 clients (s3fs, boto3) pointed at the server."""
    for key, value in s3_endpoint.env.items():
        monkeypatch.setenv(key, value)
    return f"s3://{BUCKET}"


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint, tmp_path_factory):
    """Two Ray nodes as separate ``ray start`` processes on loopback (head with the dashboard and
    Jobs API, token authentication on); their workers reach the S3 server, as a cloud cluster's
    nodes reach S3 through an instance profile."""
    from tests.servers import start_ray_cluster, stop_ray_cluster

    cluster = start_ray_cluster(tmp_path_factory.mktemp("ray-cluster"), nodes=2, cpus_per_node=2,
                                env=s3_endpoint.env)
    yield cluster
    stop_ray_cluster(cluster)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` process (SQLite backend, local artifact root) on loopback."""
    from tests.servers import start_mlflow, stop

    server = start_mlflow(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    stop(server.proc)
