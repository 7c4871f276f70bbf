"""The per-step reporter: when it logs and checkpoints, what rank 0 tracks and prints, its warnings,
and the end-of-run summary; in process, without Ray or a process group."""

import itertools
import logging
from types import SimpleNamespace

import pytest

from sslray.models.backbones import BackboneConfig
from sslray.train import progress
from sslray.train.config import PretrainConfig, TrainConfig
from sslray.train.progress import Reporter, gather

PLACEMENT = {"node": "node-a", "device": "cpu"}


def _reporter(rank: int = 0, total: int = 4, **train) -> Reporter:
    cfg = PretrainConfig(store="s", model=BackboneConfig("resnet18"), train=TrainConfig(**train))
    return Reporter(cfg, total, "sqlite:///m.db", "run-1", rank, 0, PLACEMENT)


@pytest.fixture
def logged(monkeypatch):
    """Every tracking call, and a clock that ticks one second per reading (each wait is half a step)."""
    calls = []
    monkeypatch.setattr(progress.tracking, "log_metrics", lambda uri, run, metrics, step: calls.append((step, metrics)))
    clock = itertools.count()
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    return calls


def _step(reporter: Reporter, loss: float, **metrics) -> None:
    reporter.timer.wait_starts()
    reporter.timer.data_ready()
    reporter.after_step(SimpleNamespace(loss=loss, lr=0.1, weight_decay=0.04, metrics=metrics), n_images=8)


def test_logging_and_checkpoint_steps():
    reporter = _reporter(total=10, log_every=5, checkpoint_every=3)
    assert [s for s in range(1, 11) if reporter.due(s)] == [3, 5, 6, 9, 10]
    assert [s for s in range(1, 11) if reporter.checkpoint_due(s)] == [3, 6, 9, 10]
    assert [s for s in range(1, 11) if _reporter(total=10, log_every=5).checkpoint_due(s)] == [10]


def test_rank_0_tracks_prints_and_warns_about_the_data_wait_past_start_up(logged, capsys, caplog):
    reporter = _reporter(log_every=1)
    with caplog.at_level(logging.WARNING, logger=progress.__name__):
        _step(reporter, 2.0)
        first = reporter.metrics(1)
        _step(reporter, 1.5)
        second = reporter.metrics(2)
    assert [step for step, _ in logged] == [1, 2] and "step" not in logged[0][1]
    assert first["loss"] == 2.0 and second["loss"] == 1.5 and second["lr"] == 0.1 and second["step"] == 2
    assert second["data_wait_fraction"] == pytest.approx(0.5)
    assert "[sslray] step 2/4 loss 1.5000" in capsys.readouterr().out
    waits = [r.message for r in caplog.records if "waiting for data" in r.message]
    assert waits == ["waiting for data 50% of the time: the input pipeline is the bottleneck"]  # step 1 is start-up


def test_other_ranks_neither_track_nor_print(logged, capsys):
    reporter = _reporter(rank=1, log_every=1)
    _step(reporter, 2.0)
    assert reporter.metrics(1)["loss"] == 2.0
    assert logged == [] and capsys.readouterr().out == ""


def test_a_collapsing_embedding_is_warned_about(logged, caplog):
    reporter = _reporter(log_every=1)
    _step(reporter, 1.0, feature_std=0.001, feature_std_healthy=0.5, effective_rank=4.0)
    with caplog.at_level(logging.WARNING, logger=progress.__name__):
        reporter.metrics(1)
    assert any("embeddings are collapsing" in r.message for r in caplog.records)


def test_the_last_step_carries_the_run_summary(logged):
    reporter = _reporter(total=2, log_every=1)
    _step(reporter, 3.0)
    assert "summary" not in reporter.metrics(1)
    _step(reporter, 1.0)
    summary = reporter.metrics(2)["summary"]
    assert (summary["first_loss"], summary["last_loss"], summary["last_step"]) == (3.0, 1.0, 2)
    assert [(w["rank"], w["node"], w["steps"]) for w in summary["workers"]] == [(0, "node-a", 1)]  # first is start-up


def test_gather_without_a_process_group_is_this_rank_alone():
    assert gather({"rank": 0}) == [{"rank": 0}]
