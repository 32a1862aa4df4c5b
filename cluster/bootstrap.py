"""Bootstrap Chronoverse onto a running Ray cluster (``chronoverse up`` / ``chronoverse deploy``).

Order matters: the log-store actor first (the Serve JobsService and the joblogs processor talk to
it), then the Serve application (the API), then the backbone (relay, scheduler, consumer groups and
pools), then the pool autoscaler.  Every step is idempotent (named, detached actors found with
``get_if_exists``; Serve redeploys in place), so running it again repairs a partial deployment.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

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


def deploy(settings: Settings, spec: ClusterSpec, ray_address: str,
           progress: Callable[[str], None] = print) -> None:
    """Deploy Chronoverse onto the Ray cluster at ``ray_address`` (``host:gcs_port``)."""
    from actors.log_store import start_log_store_actor
    from cluster.autoscaler import start_pool_autoscaler
    from cluster.backbone import start_backbone
    from serve_apps.app import deploy_serve

    connect(settings, ray_address)
    if settings.clickhouse.backend == "chdb":
        progress(f"log store: log-store actor owning {os.path.abspath(settings.clickhouse.chdb_path)}")
        start_log_store_actor(settings.clickhouse, settings.ray.namespace)
    progress(f"serve: deploying application {spec.serve.app_name!r} "
             f"({', '.join(spec.serve.deployments)})")
    deploy_serve(settings, spec)
    progress(f"backbone: outbox relay, scheduler, {len(spec.pools)} pools and their consumer groups")
    asyncio.run(start_backbone(settings, spec, execution_stub=False))
    progress("autoscaler: pool-autoscaler")
    start_pool_autoscaler(spec, settings.ray.namespace)
