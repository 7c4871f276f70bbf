"""Where a training step's time goes: waiting for data or computing.

A worker's ``StepTimer`` splits every step's wall time at the moment its batch arrives.
Windows of steps become the per-step metrics (images/s, data-wait fraction); the totals over
the whole attempt become the end-of-run summary, one row per worker, so a starved worker or
a slow node shows up by name. Plain Python: the Ray glue gathers the workers' totals.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

WAIT_WARNING = 0.10  # waiting for data longer than this fraction of the step time is worth a warning


@dataclass
class Window:
    """Accumulated step time, split into data wait and compute, over a number of steps."""

    steps: int = 0
    images: int = 0
    wait_s: float = 0.0
    total_s: float = 0.0

    def add(self, images: int, wait_s: float, total_s: float) -> None:
        self.steps += 1
        self.images += images
        self.wait_s += wait_s
        self.total_s += total_s

    @property
    def images_per_s(self) -> float:
        return self.images / self.total_s if self.total_s > 0 else 0.0

    @property
    def wait_fraction(self) -> float:
        return self.wait_s / self.total_s if self.total_s > 0 else 0.0


@dataclass
class StepTimer:
    """Marks when a worker starts waiting for a batch and when it has one.

    The first step of an attempt waits for the input pipeline to start (Ray Data launching
    its read tasks, the shuffle buffer filling); that wait is kept apart as ``first_batch_s``
    so the totals describe the steady state a long run lives in.
    """

    window: Window = field(default_factory=Window)
    total: Window = field(default_factory=Window)
    first_batch_s: float | None = None
    _waiting_since: float = 0.0  # set by wait_starts() before every batch
    _ready_at: float = 0.0

    def wait_starts(self) -> None:
        self._waiting_since = time.perf_counter()

    def data_ready(self) -> None:
        self._ready_at = time.perf_counter()

    def step_done(self, images: int) -> None:
        now = time.perf_counter()
        wait, step_time = self._ready_at - self._waiting_since, now - self._waiting_since
        self.window.add(images, wait, step_time)
        if self.first_batch_s is None:
            self.first_batch_s = wait
        else:
            self.total.add(images, wait, step_time)

    def take_window(self) -> Window:
        window, self.window = self.window, Window()
        return window


def window_metrics(windows: list[Window]) -> dict[str, float]:
    """Per-step metrics over all workers' windows (rank order): the run's images/s, the mean per
    worker, and the worst worker's data wait (DDP runs at the pace of the slowest-fed worker)."""
    rates = [w.images_per_s for w in windows]
    return {
        "images_per_s": sum(rates),
        "images_per_s_per_worker": sum(rates) / len(rates),
        "data_wait_fraction": max(w.wait_fraction for w in windows),
        "step_time_s": max(w.total_s / max(w.steps, 1) for w in windows),
    }


@dataclass
class WorkerSummary(Window):
    """One worker's totals over the attempt, steps after the first (see ``StepTimer``)."""

    rank: int = 0
    node: str = ""
    device: str = ""
    first_batch_s: float = 0.0

    @classmethod
    def of(cls, rank: int, node: str, device: str, timer: StepTimer) -> WorkerSummary:
        total = timer.total
        return cls(total.steps, total.images, total.wait_s, total.total_s, rank, node, device,
                   timer.first_batch_s or 0.0)


def run_summary(workers: list[WorkerSummary], first_step: int, last_step: int, wall_s: float,
                first_loss: float | None, last_loss: float | None) -> dict:
    """The end-of-run report as plain data (tracked as JSON, printed by ``format_summary``)."""
    rates = [w.images_per_s for w in workers]
    return {
        "first_step": first_step,
        "last_step": last_step,
        "wall_s": wall_s,
        "workers": [asdict(w) | {"images_per_s": w.images_per_s, "wait_fraction": w.wait_fraction}
                    for w in workers],
        "images_per_s": sum(rates),
        "images_per_s_per_worker": sum(rates) / len(rates) if rates else 0.0,
        "data_wait_fraction": max((w.wait_fraction for w in workers), default=0.0),
        "first_batch_s": max((w.first_batch_s for w in workers), default=0.0),
        "first_loss": first_loss,
        "last_loss": last_loss,
    }


def format_summary(summary: dict, checkpoint: str | None = None, tracking_hint: str | None = None) -> str:
    """One screen: what ran where, how fast, and whether the input pipeline kept up."""
    steps = summary["last_step"] - summary["first_step"]
    lines = [
        f"pretraining: steps {summary['first_step']} -> {summary['last_step']} ({steps} in this attempt) "
        f"in {_duration(summary['wall_s'])}; first batch after {summary['first_batch_s']:.1f} s (input pipeline "
        "start-up, left out of the figures below)",
        f"throughput: {summary['images_per_s']:.1f} images/s in total, "
        f"{summary['images_per_s_per_worker']:.1f} per worker; "
        f"waiting for data {100 * summary['data_wait_fraction']:.1f}% of step time (worst worker)",
    ]
    if summary.get("first_loss") is not None and summary.get("last_loss") is not None:
        lines.append(f"loss: {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}")
    lines.append(f"  {'rank':>4}  {'node':<12}  {'device':<24}  {'steps':>6}  {'images/s':>9}  {'data wait':>9}")
    for w in summary["workers"]:
        lines.append(f"  {w['rank']:>4}  {w['node'][:12]:<12}  {w['device'][:24]:<24}  {w['steps']:>6}  "
                     f"{w['images_per_s']:>9.1f}  {100 * w['wait_fraction']:>8.1f}%")
    if summary["data_wait_fraction"] > WAIT_WARNING:
        lines.append(f"warning: workers waited for data more than {100 * WAIT_WARNING:.0f}% of the time: the input "
                     "pipeline is the bottleneck (more CPUs per worker, a larger train.shuffle_buffer_mb, or a store "
                     "closer to the GPUs)")
    if checkpoint:
        lines.append(f"checkpoint: {checkpoint}")
    if tracking_hint:
        lines.append(f"MLflow: {tracking_hint}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
