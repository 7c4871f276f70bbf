"""The Ray Train worker's pieces, run in this process: no Train session, no Ray cluster.

``train_loop_per_worker`` itself only wires these together inside a Train session; it runs
end to end in tests/test_pipeline.py, tests/train/test_fault_tolerance.py and test_multinode.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslray.data.shuffle import ShuffleBuffer
from sslray.train import worker
from sslray.train.plan import TrainingPlan, checkpoint_meta
from tests.train.test_plan import _cfg


class FakeShard:
    """What ``ray.train.get_dataset_shard`` returns, as far as the worker uses it: whole blocks."""

    def __init__(self, blocks: list[dict[str, np.ndarray]]) -> None:
        self.blocks = blocks

    def iter_batches(self, batch_size=None, batch_format="numpy", prefetch_batches=0):
        assert batch_size is None and batch_format == "numpy"  # whole blocks, never re-batched in Arrow
        yield from self.blocks


def _blocks(n_blocks: int = 4, per_block: int = 8) -> list[dict[str, np.ndarray]]:
    ids = np.arange(n_blocks * per_block, dtype=np.uint8)
    return [{"image": ids[i * per_block:(i + 1) * per_block, None, None, None].repeat(4, 1),
             "other": np.zeros(per_block)} for i in range(n_blocks)]


def _drawn(seed: tuple[int, ...], column: str = "image") -> list[int]:
    blocks = _blocks()
    if column != "image":
        blocks = [{column: b["image"]} for b in blocks]
    batches = list(worker.epoch_batches(FakeShard(blocks), 8, ShuffleBuffer(16), seed, torch.device("cpu"), column))
    assert all(isinstance(b, torch.Tensor) and b.shape == (8, 4, 1, 1) for b in batches)
    return [int(v) for b in batches for v in b[:, 0, 0, 0]]


def test_an_epoch_yields_every_sample_once_as_tensors_of_the_batch_size():
    assert sorted(_drawn((0, 0, 0))) == list(range(32))


def test_the_epoch_seed_changes_the_order_and_the_same_seed_repeats_it():
    assert _drawn((0, 0, 0)) == _drawn((0, 0, 0))
    assert _drawn((0, 1, 0)) != _drawn((0, 0, 0))  # a new data epoch (or a resumed run) reshuffles
    assert _drawn((0, 0, 1)) != _drawn((0, 0, 0))  # every rank draws its own order


def test_the_plan_names_the_column_the_samples_come_from():
    assert sorted(_drawn((0, 0, 0), column="grid")) == list(range(32))


@pytest.fixture
def step_parts(tiny_store, monkeypatch):
    """The method and step as a worker builds them, with DDP wrapping left out (one process)."""
    import ray.train.torch

    monkeypatch.setattr(ray.train.torch, "prepare_model", lambda model: model)
    cfg = _cfg(tiny_store.url, steps=4)
    plan = TrainingPlan.of(cfg, tiny_store)
    method, step_fn = worker.build_step(cfg, plan)
    return cfg, plan, method, step_fn


def test_build_step_builds_the_configured_method_on_the_plans_channels(step_parts, tiny_store):
    cfg, plan, method, step_fn = step_parts
    assert method.name == cfg.method_name
    assert method.encoder().patch_embed.proj.weight.shape[1] == plan.data.in_chans == 2
    tiles = torch.from_numpy(tiny_store.read(0, 8))
    result = step_fn(tiles, 0)
    assert np.isfinite(float(result.loss))


def test_resume_starts_at_zero_without_a_checkpoint(step_parts, monkeypatch):
    import ray.train

    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    assert worker._resume(step_parts[3], steps_per_epoch=5) == (0, 0)


def test_resume_restores_step_epoch_and_the_step_state(step_parts, tiny_store, tmp_path, monkeypatch):
    import ray.train
    from ray.train import Checkpoint

    from sslray.artifacts.checkpoint import save_checkpoint

    cfg, plan, method, step_fn = step_parts
    step_fn(torch.from_numpy(tiny_store.read(0, 8)), 0)
    meta = checkpoint_meta(cfg, plan.data, method.embed_dim, "run-1")
    save_checkpoint(tmp_path, method.encoder(), meta, train_state={"step": 3, "epoch": 2, "state": step_fn.state_dict()})
    _, fresh = worker.build_step(cfg, plan)
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: Checkpoint.from_directory(str(tmp_path)))
    assert worker._resume(fresh, steps_per_epoch=5) == (3, 2)
    saved, restored = step_fn.state_dict()["method"], fresh.state_dict()["method"]
    assert all(torch.equal(saved[k], restored[k]) for k in saved)  # the trained weights, not a fresh init
    assert fresh.state_dict()["optimizer"]["state"]  # and the optimiser's moments


@pytest.mark.ray
def test_worker_placement_names_node_host_and_device(ray_session):
    placement = worker.worker_placement(0, torch.device("cpu"))
    assert placement["rank"] == "0" and placement["device"] == "cpu"
    assert placement["node"] == ray_session.get_runtime_context().get_node_id() and placement["host"]
