"""Shared fixtures: tiny generated data, one Ray instance per session, real test images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session; Ray start-up costs seconds on 2 cores.

    More logical CPUs than cores, so Ray Data read tasks never wait behind a Train worker
    or Tune trial holding the only CPU (design.md §7).
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
    return ingest_folder(IngestConfig(workers=0, src=str(root), dest=str(dest), labels=str(labels), tile_size=64,
                                      channels=["DNA", "cytoplasm"]))


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
