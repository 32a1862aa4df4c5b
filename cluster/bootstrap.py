"""Bootstrap the application onto a running Ray cluster.

For now :func:`deploy` only connects; later issues deploy the Serve application and start the actor
pools here, each from ``settings`` and the cluster file (``spec``).
"""

from __future__ import annotations

import logging
import os

from domain.config import Settings
from domain.topology import ClusterSpec


def connect(settings: Settings, ray_address: str) -> None:
    """Connect this process to the cluster at ``ray_address`` as a driver in our namespace."""
    # Token auth must match the head's mode (ray-notes §8.1); set before ray reads it.
    os.environ["RAY_AUTH_MODE"] = settings.ray.auth_mode
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    ray.init(address=ray_address, namespace=settings.ray.namespace, logging_level=logging.WARNING,
             log_to_driver=False)


def deploy(settings: Settings, spec: ClusterSpec, ray_address: str) -> None:
    """Deploy Chronoverse onto the Ray cluster at ``ray_address`` (``host:gcs_port``)."""
    connect(settings, ray_address)
