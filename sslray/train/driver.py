"""``sslray pretrain``: a config -> a Ray Train run -> the URL of the published checkpoint.

The driver opens the store view, makes the training plan once, opens (or reopens) the run's
MLflow run, and starts a ``TorchTrainer`` whose workers run ``sslray.train.worker``. Re-running
with the same ``name`` and ``out`` resumes from the latest checkpoint (Train V2 semantics) and logs
into the same MLflow run.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from sslray import storage, tracking
from sslray.artifacts.checkpoint import ENCODER_FILE, META_FILE
from sslray.artifacts.tile_store import TileStore
from sslray.config import to_dict
from sslray.runtime import ensure_ray
from sslray.train.config import PretrainConfig
from sslray.train.plan import TrainingPlan, training_pairs
from sslray.train.throughput import format_summary
from sslray.train.worker import train_loop_per_worker

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    checkpoint: str  # URL of the final checkpoint directory
    run_id: str
    tracking_uri: str  # redacted, safe to print (summary.json, the CLI's JSON)
    steps: int
    summary: dict[str, Any] | None = None  # throughput of this attempt (None when it found the run finished)


def run_pretrain(cfg: PretrainConfig) -> PretrainResult:
    """Pretrain ``cfg.method`` on ``cfg.store`` with Ray Train; returns the final checkpoint and its run."""
    uri = tracking.resolve_uri(cfg.tracking, cfg.out)  # inline credentials, a dead server: fail before Ray starts
    ensure_ray()
    from ray.data import DataContext

    from sslray.data.datasource import read_tile_store

    DataContext.get_current().enable_progress_bars = False  # the workers print their own progress line
    store = TileStore.open(cfg.store).select(cfg.data)
    plan = TrainingPlan.of(cfg, store)
    run_id = _tracking_run(cfg, uri, plan)
    storage.write_json(storage.join(checkpoint_root(cfg.out), cfg.name, "sslray_config.json"),
                       tracking.redact(to_dict(cfg)))
    dataset = read_tile_store(store, shuffle=True, pairs=training_pairs(cfg))
    trainer = _trainer(cfg, {"cfg": to_dict(cfg), "plan": plan, "tracking_uri": uri, "run_id": run_id}, dataset)
    try:
        result = trainer.fit()
    except BaseException:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    checkpoint = _checkpoint_url(result.checkpoint)
    summary = (result.metrics or {}).get("summary")
    _log_final(uri, run_id, checkpoint, summary)
    if summary:
        print(format_summary(summary, checkpoint, tracking.ui_hint(uri)), file=sys.stderr, flush=True)
    return PretrainResult(checkpoint, run_id, tracking.redact_url(uri), plan.total_steps, summary)


def _trainer(cfg: PretrainConfig, loop_config: dict[str, Any], dataset):
    """The ``TorchTrainer``: workers and resources from ``cfg.train``, checkpoints under ``out/checkpoints``."""
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
            storage_path=checkpoint_root(cfg.out),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        ),
        datasets={"train": dataset},
    )


def checkpoint_root(out: str) -> str:
    return storage.join(storage.local_path(out), "checkpoints")


def _tracking_run(cfg: PretrainConfig, uri: str, plan: TrainingPlan) -> str:
    """One MLflow run per pretraining: a resubmitted job (same ``out`` and ``name``) logs on
    into the run it started, so its metrics continue on one page instead of a new one."""
    marker = storage.join(checkpoint_root(cfg.out), cfg.name, "mlflow_run.json")
    if storage.exists(marker):
        saved = storage.read_json(marker)
        if saved.get("uri") == tracking.redact(uri) and tracking.reopen_run(uri, saved["run_id"]):
            log.info("resuming: logging into MLflow run %s", saved["run_id"])
            return saved["run_id"]
    tags = {
        "sslray.stage": "pretrain",
        "sslray.method": cfg.method_name,
        "sslray.store": plan.data.lineage.store,
        "sslray.manifest_sha256": plan.data.lineage.manifest_sha256,
    }
    run_id = tracking.start_run(uri, cfg.tracking.experiment, cfg.name, cfg.out, tags)
    tracking.log_config(uri, run_id, to_dict(cfg))
    storage.write_json(marker, {"run_id": run_id, "uri": tracking.redact(uri)})
    return run_id


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


def _log_final(uri: str, run_id: str, checkpoint: str, summary: dict | None) -> None:
    import mlflow

    client = mlflow.MlflowClient(uri)
    client.set_tag(run_id, "sslray.checkpoint", tracking.redact(checkpoint))
    if summary:
        tracking.log_json(uri, run_id, summary, "throughput.json")
    with tempfile.TemporaryDirectory() as tmp:
        for name in (ENCODER_FILE, META_FILE):
            path = f"{tmp}/{name}"
            with open(path, "wb") as handle:
                handle.write(storage.read_bytes(storage.join(checkpoint, name)))
            client.log_artifact(run_id, path, "checkpoint")
    tracking.end_run(uri, run_id)
