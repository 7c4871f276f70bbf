"""Run a list of grid points as Ray Tune trials, the data shared once through the object store.

Every protocol's grid (MIL head x configuration x outer fold, kNN's k, ...) is a list of plain
dicts; ``run_points`` makes each one trial with fractional CPU/GPU resources, so a cluster runs
them side by side and a laptop queues them. ``tune.with_parameters`` puts ``shared`` (the bags,
the folds) in the object store once; trials read it from there instead of each pickling a copy
(docs/protocols.md, "Nested cross-validation"). A trial returns a JSON-able dict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sslray import storage


@dataclass(frozen=True)
class TrialResources:
    cpus: float = 0.5
    gpus: float = 0.0
    max_parallel: int = 0  # 0: as many as the resources allow

    def __post_init__(self) -> None:
        if self.cpus <= 0 or self.gpus < 0 or self.max_parallel < 0:
            raise ValueError(f"trial resources must be positive: cpus={self.cpus}, gpus={self.gpus}, "
                             f"max_parallel={self.max_parallel}")


def run_points(trial: Callable[..., dict], points: list[dict], shared: dict[str, Any], resources: TrialResources,
               name: str, run_dir: str) -> list[dict]:
    """The result of ``trial(point, **shared)`` for every point, in the points' order; a failed trial
    fails the grid with its error, since a grid with holes would bias the selection."""
    from ray import tune

    from sslray.runtime import ensure_ray

    ensure_ray()
    trainable = tune.with_resources(tune.with_parameters(_trial, trial=trial, points=points, **shared),
                                    {"CPU": resources.cpus, "GPU": resources.gpus})
    tuner = tune.Tuner(
        trainable,
        param_space={"point": tune.grid_search(list(range(len(points))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_parallel or None),
        run_config=tune.RunConfig(name=name, storage_path=storage.join(storage.local_path(run_dir), "tune"),
                                  verbose=0),
    )
    grid = tuner.fit()
    by_point: dict[int, dict] = {}
    for result in grid:
        if result.error is not None:
            raise RuntimeError(f"grid point {points[result.config['point']]} failed: {result.error}")
        by_point[result.config["point"]] = json.loads(result.metrics["result"])
    return [by_point[i] for i in range(len(points))]


def _trial(config: dict, trial: Callable[..., dict], points: list[dict], **shared) -> dict:
    import torch

    torch.set_num_threads(1)  # a fractional-CPU trial must not spread over every core
    return {"result": json.dumps(trial(points[config["point"]], **shared))}
