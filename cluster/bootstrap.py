"""Bootstrap Chronoverse onto a running Ray cluster (``chronoverse up`` / ``chronoverse deploy``).

Order matters: the log-store actor first (the Serve JobsService and the joblogs processor talk to
it), then the Serve application (the API) is submitted, then the backbone (relay, scheduler, consumer
groups and pools) starts while the Serve replicas come up, then the pool autoscaler; last, ``deploy``
waits until the application is RUNNING.  Every step is idempotent (named, detached actors found with
``get_if_exists``; Serve redeploys in place), so running it again repairs a partial deployment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from domain.config import Settings
from domain.errors import Timeout, Unavailable
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


def head_only_proxy(spec: ClusterSpec) -> ClusterSpec:
    """``spec`` with Serve's proxy on the head only: on the fake multi-node cluster every "node" is
    this machine, so a proxy per node would fight over ``SERVER_PORT`` (ray-notes §8.19)."""
    return spec.model_copy(update={"serve": spec.serve.model_copy(update={"proxy_location": "HeadOnly"})})


#: How long ``deploy`` waits for the Serve application to be RUNNING.
SERVE_READY_TIMEOUT_S = 300.0


class ServeDeploymentReport(BaseModel):
    """One Serve deployment for ``chronoverse status``."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: str
    running: int
    replicas: int
    message: str = ""


class ServeReport(BaseModel):
    """The Serve application on the connected cluster: ``status`` is ``None`` when it is not deployed."""

    model_config = ConfigDict(frozen=True)

    app: str
    status: str | None
    message: str = ""
    proxies: int = 0
    deployments: list[ServeDeploymentReport] = Field(default_factory=list)


def _text(value: object) -> str:
    # serve.status() hands back enum members or, after a round trip through the controller, their
    # plain string values.
    return str(getattr(value, "value", value))


def serve_report(app_name: str) -> ServeReport:
    """Status of the Serve application ``app_name`` and its deployments (needs a connected driver)."""
    from ray import serve

    status = serve.status()
    app = status.applications.get(app_name)
    if app is None:
        return ServeReport(app=app_name, status=None, proxies=len(status.proxies))
    deployments = [
        ServeDeploymentReport(
            name=name,
            status=_text(dep.status),
            running=sum(n for state, n in dep.replica_states.items() if _text(state) == "RUNNING"),
            replicas=sum(dep.replica_states.values()),
            message=dep.message,
        )
        for name, dep in sorted(app.deployments.items())
    ]
    return ServeReport(app=app_name, status=_text(app.status), message=app.message,
                       proxies=len(status.proxies), deployments=deployments)


def deploy(settings: Settings, spec: ClusterSpec, ray_address: str,
           progress: Callable[[str], None] = print, *, skip_serve: bool = False,
           keep_running_serve: bool = False) -> None:
    """Deploy Chronoverse onto the Ray cluster at ``ray_address`` (``host:gcs_port``).

    ``skip_serve`` leaves the Serve application alone: under KubeRay the ``RayService`` owns it
    (``serveConfigV2``), and deploying it from here would fight the operator.
    ``keep_running_serve`` leaves a RUNNING application as it is (a second ``chronoverse up``):
    ``serve.run`` would otherwise replace every replica, since each run is a new code version."""
    from actors.log_store import start_log_store_actor
    from cluster.autoscaler import start_pool_autoscaler
    from cluster.backbone import start_backbone

    connect(settings, ray_address)
    from ray import serve  # noqa: F401 - importing it configures its logger, which we then quiet

    # Our progress lines tell the story; Serve's INFO lines on the driver would repeat it.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if settings.clickhouse.backend == "chdb":
        progress(f"log store: log-store actor owning {os.path.abspath(settings.clickhouse.chdb_path)}")
        start_log_store_actor(settings.clickhouse, settings.ray.namespace)
    app = spec.serve.app_name
    deploying = False
    if skip_serve:
        progress("serve: skipped (--skip-serve: the Serve application is managed elsewhere)")
    elif keep_running_serve and serve_report(app).status == "RUNNING":
        progress(f"serve: application {app!r} already running (`chronoverse deploy` redeploys it)")
    else:
        from serve_apps.app import deploy_serve

        progress(f"serve: deploying application {app!r} "
                 f"({', '.join(spec.serve.deployments)}; proxy {spec.serve.proxy_location})")
        # Not waiting here: the replicas start while the backbone's actors do (the wait is below).
        deploy_serve(settings, spec, blocking_wait=False)
        deploying = True
    progress(f"backbone: outbox relay, scheduler, {len(spec.pools)} pools and their consumer groups")
    asyncio.run(start_backbone(settings, spec, execution_stub=False))
    progress("autoscaler: pool-autoscaler")
    start_pool_autoscaler(spec, settings.ray.namespace)
    if deploying:
        for name in (app, spec.serve.grpc_app_name):
            wait_for_serve(name, progress=progress)


def wait_for_serve(app_name: str, *, timeout_s: float = SERVE_READY_TIMEOUT_S,
                   progress: Callable[[str], None] = print) -> None:
    """Wait until the Serve application is RUNNING; raise :class:`Unavailable` when it failed or
    :class:`Timeout` when it is still not running after ``timeout_s``."""
    started = time.monotonic()
    next_note = started + 10.0
    while True:
        report = serve_report(app_name)
        if report.status == "RUNNING":
            progress(f"serve: application {app_name!r} running")
            return
        if report.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise Unavailable(f"Serve application {app_name!r} is {report.status}: {report.message}")
        now = time.monotonic()
        if now - started > timeout_s:
            raise Timeout(f"Serve application {app_name!r} is not running after {timeout_s:.0f}s "
                          f"(status {report.status}; replicas: {_replica_summary(report)})")
        if now >= next_note:
            progress(f"serve: waiting for {app_name!r} ({now - started:.0f}s; {_replica_summary(report)})")
            next_note = now + 10.0
        time.sleep(0.5)


def _replica_summary(report: ServeReport) -> str:
    return ", ".join(f"{d.name} {d.running}/{d.replicas}" for d in report.deployments) or "none yet"
