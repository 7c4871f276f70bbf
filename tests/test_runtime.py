"""Connecting to Ray: join RAY_ADDRESS's cluster (logged redacted), else a local Ray; once per process."""

import logging

import pytest

from sslray.runtime import ensure_ray

ray = pytest.importorskip("ray")


@pytest.fixture
def init_calls(monkeypatch):
    """``ray.init`` recorded instead of run, with Ray not yet started."""
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    return calls


def test_ray_address_joins_that_cluster_and_logs_it_redacted(init_calls, monkeypatch, caplog):
    monkeypatch.setenv("RAY_ADDRESS", "http://user:hunter2@head:8265")
    with caplog.at_level(logging.INFO, logger="sslray.runtime"):
        ensure_ray(num_cpus=2)
    assert init_calls == [{"address": "http://user:hunter2@head:8265", "log_to_driver": True,
                           "configure_logging": False}]  # num_cpus is the cluster's business
    assert "hunter2" not in caplog.text and "head:8265" in caplog.text


def test_without_an_address_a_local_ray_gets_the_asked_resources(init_calls, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ensure_ray(num_cpus=2, object_store_memory=1 << 28)
    ensure_ray()
    assert init_calls == [{"log_to_driver": True, "configure_logging": False, "num_cpus": 2,
                           "object_store_memory": 1 << 28}, {"log_to_driver": True, "configure_logging": False}]


def test_an_initialised_ray_is_left_alone(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("ray.init called twice"))
    ensure_ray(num_cpus=1)
