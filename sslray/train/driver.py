"""``sslray pretrain``: a config -> a Ray Train run -> the URL of the published checkpoint.

The driver opens the store view, makes the training plan once, opens (or reopens) the run's
MLflow run, and starts a ``TorchTrainer`` whose workers run ``sslray.train.worker``. Re-running
with the same ``name`` and ``run_dir`` resumes from the latest checkpoint (Train V2 semantics) and logs
into the same MLflow run.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from sslray import storage, tracking
from sslray.artifacts.checkpoint import ENCODER_FILE, META_FILE
from sslray.artifacts.tile_store import TileStore
from sslray.config import to_dict
from sslray.runtime import ensure_ray
from sslray.stage import StageRun, tracked_run
from sslray.train.config import PretrainConfig
from sslray.train.plan import TrainingPlan, training_pairs
from sslray.train.throughput import format_summary
from sslray.train.worker import train_loop_per_worker


@dataclass
class PretrainResult:
    checkpoint: str  # URL of the final checkpoint directory
    run_id: str
    tracking_uri: str  # redacted, safe to print (summary.json, the CLI's JSON)
    steps: int
    summary: dict[str, Any] | None = None  # throughput of this attempt (None when it found the run finished)


def run_pretrain(cfg: PretrainConfig) -> PretrainResult:
    """Pretrain ``cfg.method`` on ``cfg.store`` with Ray Train; returns the final checkpoint and its run."""
    tracking.check(cfg.tracking, cfg.run_dir)  # inline credentials, a dead server: fail before Ray starts
    ensure_ray()
    from ray.data import DataContext

    from sslray.data.datasource import read_tile_store

    DataContext.get_current().enable_progress_bars = False  # the workers print their own progress line
    store = TileStore.open(cfg.store).select(cfg.data)
    plan = TrainingPlan.of(cfg, store)
    with _tracked(cfg, plan) as run:
        storage.write_json(storage.join(checkpoint_root(cfg.run_dir), cfg.name, "sslray_config.json"),
                           tracking.redact(to_dict(cfg)))
        dataset = read_tile_store(store, shuffle=True, pairs=training_pairs(cfg))
        loop_config = {"cfg": to_dict(cfg), "plan": plan, "tracking_uri": run.uri, "run_id": run.run_id}
        checkpoint, metrics = fit(cfg, loop_config, dataset)
        summary = metrics.get("summary")
        _log_final(run, checkpoint, summary)
    if summary:
        print(format_summary(summary, checkpoint, tracking.ui_hint(run.uri)), file=sys.stderr, flush=True)
    return PretrainResult(checkpoint, run.run_id, tracking.redact_url(run.uri), plan.total_steps, summary)


def fit(cfg: PretrainConfig, loop_config: dict[str, Any], dataset) -> tuple[str, dict[str, Any]]:
    """Train to the end on ``dataset`` (tiles, or spot grids for ``sslray aggregate``): the final
    checkpoint's URL and the last reported metrics."""
    result = _trainer(cfg, loop_config, dataset).fit()
    return _checkpoint_url(result.checkpoint), dict(result.metrics or {})


def _trainer(cfg: PretrainConfig, loop_config: dict[str, Any], dataset):
    """The ``TorchTrainer``: workers and resources from ``cfg.train``, checkpoints under ``run_dir/checkpoints``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=max(cfg.train.num_workers, 1),
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker, **({"GPU": 1} if cfg.train.use_gpu else {})},
            placement_strategy=cfg.train.placement_strategy,
        ),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=checkpoint_root(cfg.run_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        ),
        datasets={"train": dataset},
    )


def checkpoint_root(run_dir: str) -> str:
    return storage.join(storage.local_path(run_dir), "checkpoints")


def _tracked(cfg: PretrainConfig, plan: TrainingPlan):
    """One MLflow run per pretraining: a resubmitted job (same ``run_dir`` and ``name``) logs on
    into the run it started, so its metrics continue on one page instead of a new one."""
    tags = {"sslray.method": cfg.method_name, "sslray.store": plan.data.lineage.store,
            "sslray.manifest_sha256": plan.data.lineage.manifest_sha256}
    marker = storage.join(checkpoint_root(cfg.run_dir), cfg.name, "mlflow_run.json")
    return tracked_run(cfg.tracking, cfg.run_dir, stage="pretrain", input=cfg.name, config=to_dict(cfg), tags=tags,
                       resume_marker=marker)


def _checkpoint_url(checkpoint) -> str:
    """Ray hands back a pyarrow filesystem and a path; sslray passes URLs (docs/stack_facts.md)."""
    if checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    fs_type = type(checkpoint.filesystem).__name__
    if fs_type == "S3FileSystem":
        return f"s3://{checkpoint.path}"
    if fs_type == "GcsFileSystem":
        return f"gs://{checkpoint.path}"
    return checkpoint.path


def _log_final(run: StageRun, checkpoint: str, summary: dict | None) -> None:
    import mlflow

    client = mlflow.MlflowClient(run.uri)
    run.set_tags({"sslray.checkpoint": tracking.redact(checkpoint)})
    if summary:
        run.log_json(summary, "throughput.json")
    with tempfile.TemporaryDirectory() as tmp:
        for name in (ENCODER_FILE, META_FILE):
            path = f"{tmp}/{name}"
            with open(path, "wb") as handle:
                handle.write(storage.read_bytes(storage.join(checkpoint, name)))
            client.log_artifact(run.run_id, path, "checkpoint")
