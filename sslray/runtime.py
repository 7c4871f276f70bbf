"""Connecting to Ray: a cluster when ``RAY_ADDRESS`` says so, else a local one in process."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Initialise Ray once per process; a no-op when already connected.

    With ``RAY_ADDRESS`` set (or inside ``ray job submit``) this joins that cluster; otherwise
    it starts a local Ray with this machine's CPUs and GPUs.
    """
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"log_to_driver": True, "configure_logging": False}
    if address:
        from sslray.credentials import redact_url

        log.info("connecting to the Ray cluster at %s", redact_url(address))
        ray.init(address=address, **kwargs)
        return
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if object_store_memory is not None:
        kwargs["object_store_memory"] = object_store_memory
    ray.init(**kwargs)


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
