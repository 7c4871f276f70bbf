"""Grid points as Ray Tune trials on the shared Ray: results in point order, the shared data read
from the object store (not pickled into each trial), a failed point failing the grid by name."""

import numpy as np
import pytest

from sslray.evaluate.tune_grid import TrialResources, run_points

pytestmark = pytest.mark.ray


def _square(point: dict, table: np.ndarray) -> dict:
    return {"value": point["x"] ** 2 + float(table.sum()), "shared_read_only": not table.flags.writeable}


def _fails(point: dict, table: np.ndarray) -> dict:
    if point["x"] == 2:
        raise ValueError("bad point")
    return {}


def test_points_run_as_trials_and_come_back_in_order(ray_session, tmp_path):
    table = np.ones((50_000, 8), dtype=np.float32)  # 1.6 MB: held in shared memory
    results = run_points(_square, [{"x": 3}, {"x": 1}, {"x": 2}], {"table": table},
                         TrialResources(cpus=0.25), "grid", str(tmp_path))
    assert [r["value"] for r in results] == [400_009.0, 400_001.0, 400_004.0]
    assert all(r["shared_read_only"] for r in results)  # mapped from the object store, not a private copy


def test_a_failed_point_fails_the_grid_naming_it(ray_session, tmp_path):
    with pytest.raises(RuntimeError, match=r"grid point \{'x': 2\} failed"):
        run_points(_fails, [{"x": 1}, {"x": 2}], {"table": np.zeros(3)}, TrialResources(cpus=0.25), "grid",
                   str(tmp_path))


def test_resources_are_checked():
    with pytest.raises(ValueError, match="trial resources"):
        TrialResources(cpus=0)
