"""Per-step progress of a pretraining: timing (data wait vs compute), the console line, MLflow metrics.

Runs on every Ray Train worker; rank 0 speaks for the run. No Ray import (the gathers use
``torch.distributed``), so the reporter is tested without a cluster.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sslray import tracking
from sslray.methods.monitor import collapse_warning
from sslray.train.config import PretrainConfig
from sslray.train.throughput import WAIT_WARNING, StepTimer, WorkerSummary, run_summary, window_metrics

log = logging.getLogger(__name__)


class Reporter:
    """Per-step timing (data wait vs compute), console progress and MLflow metrics.

    Every rank times its own steps; at each log step the ranks' windows are gathered so rank 0
    logs the run's images/s and the worst-fed worker's data wait, and at the last step their
    totals, so the summary has one row per worker. Gathers are collectives: every rank reaches
    them at the same steps because all ranks run the same step count.
    """

    def __init__(self, cfg: PretrainConfig, total_steps: int, uri: str, run_id: str, rank: int, start_step: int,
                 placement: dict[str, str]) -> None:
        self.cfg = cfg
        self.total = total_steps
        self.rank = rank
        self.uri = uri
        self.run_id = run_id
        self.start_step = start_step
        self.placement = placement
        self.started = time.perf_counter()
        self.timer = StepTimer()
        self.first_loss: float | None = None
        self.last: dict[str, float] = {}

    def after_step(self, result, n_images: int) -> None:
        self.timer.step_done(n_images)
        if self.first_loss is None:
            self.first_loss = result.loss
        self.last = {"loss": result.loss, "lr": result.lr, "weight_decay": result.weight_decay, **result.metrics}

    def due(self, step: int) -> bool:
        return step % max(self.cfg.train.log_every, 1) == 0 or self.checkpoint_due(step)

    def checkpoint_due(self, step: int) -> bool:
        every = self.cfg.train.checkpoint_every
        return step == self.total or (every > 0 and step % every == 0)

    def metrics(self, step: int) -> dict[str, Any]:
        throughput = window_metrics(gather(self.timer.take_window()))
        metrics: dict[str, Any] = {**self.last, **throughput, "step": step}
        if self.rank == 0:
            tracking.log_metrics(self.uri, self.run_id, {k: v for k, v in metrics.items() if k != "step"}, step)
            self._print_progress(step, metrics)
            past_start_up = step > self.start_step + self.cfg.train.log_every
            if throughput["data_wait_fraction"] > WAIT_WARNING and past_start_up:
                log.warning("waiting for data %.0f%% of the time: the input pipeline is the bottleneck",
                            100 * throughput["data_wait_fraction"])
            if "feature_std" in metrics and (warning := collapse_warning(metrics)):
                log.warning("step %d: %s", step, warning)
        if step == self.total:
            metrics["summary"] = self.summary(step)
        return metrics

    def summary(self, step: int) -> dict[str, Any]:
        mine = WorkerSummary.of(self.rank, self.placement["node"], self.placement["device"], self.timer)
        workers = gather(mine)
        return run_summary(workers, self.start_step, step, time.perf_counter() - self.started,
                           self.first_loss, self.last.get("loss"))

    def _print_progress(self, step: int, metrics: dict[str, float]) -> None:
        elapsed = time.perf_counter() - self.started
        done = step - self.start_step
        eta = elapsed / max(done, 1) * (self.total - step)
        print(
            f"[sslray] step {step}/{self.total} loss {metrics['loss']:.4f} "
            f"{metrics['images_per_s']:.1f} img/s data-wait {100 * metrics['data_wait_fraction']:.0f}% "
            f"ETA {eta:.0f}s",
            flush=True,
        )


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
