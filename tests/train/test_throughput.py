"""Step time split into data wait and compute; per-worker summary; the 10% warning."""

import pytest

from sslray.train import throughput
from sslray.train.throughput import StepTimer, Window, WorkerSummary, format_summary, run_summary, window_metrics


def test_timer_splits_each_step_at_the_moment_its_batch_arrives(monkeypatch):
    clock = iter([0.0, 8.0, 9.0, 1.0, 1.5, 4.0, 4.5, 6.0, 6.5])
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    timer = StepTimer()
    timer.wait_starts(), timer.data_ready(), timer.step_done(8)  # the pipeline's start-up: 8 s for the first batch
    for _ in range(2):
        timer.wait_starts()   # 1.0, then 4.5
        timer.data_ready()    # 1.5, then 6.0  -> waits 0.5 and 1.5
        timer.step_done(8)    # 4.0, then 6.5  -> steps of 3.0 and 2.0
    window = timer.take_window()
    assert (window.steps, window.images) == (3, 24)  # the window logs what happened, start-up included
    assert window.wait_s == pytest.approx(10.0) and window.total_s == pytest.approx(14.0)
    total = timer.total  # the run's totals describe the steady state
    assert timer.first_batch_s == pytest.approx(8.0) and (total.steps, total.images) == (2, 16)
    assert total.wait_fraction == pytest.approx(0.4) and total.images_per_s == pytest.approx(16 / 5)
    assert timer.window.steps == 0 and timer.total.steps == 2  # the window restarts, the total does not


def test_window_metrics_sum_rates_and_report_the_worst_fed_worker():
    fast, starved = Window(4, 40, 0.1, 2.0), Window(4, 40, 1.0, 4.0)
    metrics = window_metrics([fast, starved])
    assert metrics["images_per_s"] == pytest.approx(20 + 10)
    assert metrics["images_per_s_per_worker"] == pytest.approx(15)
    assert metrics["data_wait_fraction"] == pytest.approx(0.25)
    assert metrics["step_time_s"] == pytest.approx(1.0)


def _summary(wait_s: float) -> dict:
    workers = [WorkerSummary(10, 640, 0.2, 4.0, rank=0, node="node-a", device="cpu", first_batch_s=3.0),
               WorkerSummary(10, 640, wait_s, 4.0, rank=1, node="node-b", device="cpu", first_batch_s=5.0)]
    return run_summary(workers, 20, 30, 9.0, 5.0, 4.0)


def test_summary_has_one_row_per_worker_and_warns_above_ten_percent():
    calm, starved = _summary(0.3), _summary(1.2)
    assert calm["images_per_s"] == pytest.approx(320) and calm["data_wait_fraction"] == pytest.approx(0.075)
    text = format_summary(calm, "/ckpt/checkpoint_x", "mlflow ui ...")
    assert "steps 20 -> 30 (10 in this attempt)" in text and "node-a" in text and "node-b" in text
    assert "checkpoint: /ckpt/checkpoint_x" in text and "warning" not in text
    assert "first batch after 5.0 s" in text
    assert starved["data_wait_fraction"] == pytest.approx(0.3)
    assert "input pipeline is the bottleneck" in format_summary(starved)
