"""The Serve application ``chronoverse``: build it, deploy it, or render its ``serve deploy`` config.

* :func:`build_app` binds the six deployments with options from the cluster file
  (``spec.serve.deployments[name]``: resource class → ``ray_actor_options`` with fractional CPUs,
  ``max_ongoing_requests``, ``autoscaling_config``; never a fixed ``num_replicas``).
* :func:`deploy_serve` starts Serve with explicit ports and runs the app (what ``chronoverse up``
  and ``chronoverse deploy`` call).
* :func:`app_builder` is the module-level builder named by ``deploy/serve.yaml``
  (``import_path: serve_apps.app:app_builder``); its typed ``args`` carry the settings and the
  cluster spec, rendered by :func:`render_serve_config`.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from domain.config import Settings
from domain.topology import ClusterSpec
from serve_apps.deployments import (
    HAPROXY_INGRESS_ENV,
    AnalyticsService,
    Gateway,
    JobsService,
    NotificationsService,
    UsersService,
    WorkflowsService,
)
from serve_apps.grpc.deployment import GRPC_ROUTE_PREFIX, GRPC_SERVICER_FUNCTIONS, build_grpc_app

#: Our structured access log replaces Serve's per-request line (one line per request, not two).
APP_LOGGING_CONFIG: dict[str, Any] = {"enable_access_log": False, "log_level": "INFO"}


def deployment_options(spec: ClusterSpec, name: str) -> dict[str, Any]:
    """``.options(...)`` of deployment ``name`` from the cluster file."""
    try:
        dep = spec.serve.deployments[name]
    except KeyError:
        raise KeyError(f"serve.deployments.{name} is missing from the cluster file") from None
    resource_class = spec.resource_classes[dep.resource_class]
    return {
        "name": name,
        "ray_actor_options": resource_class.ray_options(),
        "max_ongoing_requests": dep.max_ongoing_requests,
        "autoscaling_config": dep.autoscaling_config.model_dump(exclude_none=True),
    }


def build_app(settings: Settings, spec: ClusterSpec) -> Application:
    """The ``chronoverse`` application: ``Gateway`` (ingress) bound to the five domain services."""

    def bind(deployment: Any, name: str) -> Any:
        return deployment.options(**deployment_options(spec, name)).bind(settings)

    users = bind(UsersService, "UsersService")
    workflows = bind(WorkflowsService, "WorkflowsService")
    jobs = bind(JobsService, "JobsService")
    notifications = bind(NotificationsService, "NotificationsService")
    analytics = bind(AnalyticsService, "AnalyticsService")
    gateway: Any = Gateway  # serve.ingress hides the Deployment type from type checkers
    return gateway.options(**deployment_options(spec, "Gateway")).bind(
        settings, users, workflows, jobs, notifications, analytics
    )


def http_options(settings: Settings) -> dict[str, Any]:
    """Serve proxy HTTP options: host/port from ``SERVER_HOST``/``SERVER_PORT``; idle keep-alive
    from ``SERVER_IDLE_TIMEOUT``.  No proxy-level request timeout: the gateway applies
    ``SERVER_REQUEST_TIMEOUT`` itself, except to SSE streams and raw downloads."""
    return {
        "host": settings.server.host,
        "port": settings.server.port,
        "keep_alive_timeout_s": max(1, int(settings.server.idle_timeout.total_seconds())),
    }


def grpc_options(settings: Settings) -> dict[str, Any]:
    """Serve gRPC options: an explicit port (Serve's default 9000 is ClickHouse's) and the servicers
    of the gRPC API (ADR 0005).  ``GRPC_PORT`` is where clients connect with either ingress: Serve's
    proxy listens there, or with the HAProxy ingress HAProxy does (the proxy then moves to
    ``RAY_SERVE_FALLBACK_PROXY_GRPC_PORT``)."""
    return {"port": settings.grpc.port, "grpc_servicer_functions": list(GRPC_SERVICER_FUNCTIONS)}


#: Longest ``work_dir`` of :func:`haproxy_ingress_env`: HAProxy's 97-byte stats socket path limit
#: minus ``/<node id>/admin.sock`` (1 + 56 + 11 bytes).
HAPROXY_WORK_DIR_MAX = 97 - len("/") - 56 - len("/admin.sock")


#: How long Serve waits for a starting proxy (its default is 5 s), under the HAProxy ingress.
PROXY_READY_TIMEOUT_S = 30


def haproxy_ingress_env(
    *,
    work_dir: str,
    stats_port: int,
    metrics_port: int,
    fallback_http_port: int,
    fallback_grpc_port: int,
    throughput_optimized: bool = True,
) -> dict[str, str]:
    """Environment for ``ray start`` (every node, before Serve starts) that puts Serve's HAProxy
    ingress in front of the Gateway replicas, with every port explicit and its files under
    ``work_dir`` (Serve's defaults are 0.0.0.0:8404/9101, 127.0.0.1:8500/9500 and /tmp/haproxy-serve).

    ``throughput_optimized`` also sets ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (user code on the
    replica's main loop, gRPC between handles).  Measured by ``bench/api.py`` (ADR 0004).  HAProxy
    neither adds nor strips ``X-Forwarded-For``, so the gateway ignores that header unless
    ``SERVER_TRUST_FORWARDED_FOR`` says a proxy in front sets it (login limiting is then per e-mail
    only).

    Serve puts each node's files in ``<work_dir>/<56-character node id>/`` and HAProxy refuses a
    stats socket path over 97 bytes, so ``work_dir`` may have at most
    :data:`HAPROXY_WORK_DIR_MAX` characters (``ValueError`` otherwise).
    """
    if len(work_dir) > HAPROXY_WORK_DIR_MAX:
        raise ValueError(
            f"HAProxy work dir {work_dir!r} is longer than {HAPROXY_WORK_DIR_MAX} characters: its "
            "per-node admin socket path would exceed HAProxy's 97-byte limit"
        )
    env = {
        HAPROXY_INGRESS_ENV: "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_http_port),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback_grpc_port),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{work_dir}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{work_dir}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": work_dir,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{work_dir}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{work_dir}/metrics.sock",
        # Serve kills a proxy not ready within 5 s and serve.start() then fails (ActorDiedError);
        # the HAProxy manager starts a process and waits for its socket, which a loaded node can
        # stretch past that.  Still bounded: a proxy that cannot start fails `up` after this.
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": str(PROXY_READY_TIMEOUT_S),
    }
    if throughput_optimized:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    return env


def deploy_serve(settings: Settings, spec: ClusterSpec, *, blocking_wait: bool = True) -> DeploymentHandle:
    """Start Serve (explicit HTTP/gRPC ports, proxy location from the spec) on the connected Ray
    cluster and deploy the app as ``spec.serve.app_name``.

    With ``blocking_wait`` the call returns once every deployment is RUNNING; otherwise once the
    ingress deployment exists.  Returns the Gateway handle.  Serve options only take effect when
    Serve is first started on the cluster; redeploying updates the app in place.
    """
    serve.start(
        proxy_location=spec.serve.proxy_location,
        http_options=http_options(settings),
        grpc_options=grpc_options(settings),
    )
    target = serve.RunTarget(
        target=build_app(settings, spec),
        name=spec.serve.app_name,
        route_prefix=spec.serve.route_prefix,
        logging_config=APP_LOGGING_CONFIG,
    )
    grpc_target = serve.RunTarget(
        target=build_grpc_app(settings, spec),
        name=spec.serve.grpc_app_name,
        route_prefix=GRPC_ROUTE_PREFIX,
        logging_config=APP_LOGGING_CONFIG,
    )
    handles = serve.run_many([target, grpc_target], wait_for_applications_running=blocking_wait)
    return handles[0]


class ServeAppArgs(BaseModel):
    """Typed ``args`` of :func:`app_builder` (validated by Serve from ``deploy/serve.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    settings: Settings = Field(default_factory=Settings)
    spec: ClusterSpec = Field(default_factory=ClusterSpec)


def app_builder(args: ServeAppArgs) -> Application:
    """Module-level builder for ``serve deploy`` / ``serve run`` (``import_path``)."""
    return build_app(args.settings, args.spec)


def grpc_app_builder(args: ServeAppArgs) -> Application:
    """Module-level builder of the gRPC application (``spec.serve.grpc_app_name``)."""
    return build_grpc_app(args.settings, args.spec)


def settings_document(settings: Settings, *, only_changes: bool = False) -> dict[str, Any]:
    """``settings`` as JSON data that validates back to the same settings, secrets included
    (``model_dump`` masks them).  With ``only_changes`` just the values that differ from the
    defaults (the builder fills in the rest)."""
    data = settings.model_dump(mode="json", exclude_defaults=only_changes)
    for section_name in type(settings).model_fields:
        section = getattr(settings, section_name)
        for key in type(section).model_fields:
            value = getattr(section, key)
            if isinstance(value, SecretStr) and key in data.get(section_name, {}):
                data[section_name][key] = value.get_secret_value()
    return data


def render_serve_config(settings: Settings, spec: ClusterSpec) -> dict[str, Any]:
    """The ``serve deploy`` config of this app (``deploy/serve.yaml``): explicit ports, the proxy
    location, and ``args`` carrying the settings that differ from the defaults (secrets included:
    keep a rendered production file private) and the cluster spec.  Deployment options are not
    repeated: :func:`build_app` takes them from ``args.spec``, so there is no ``num_replicas``.
    The gRPC application (``spec.serve.grpc_app_name``) is deployed beside it with the same args."""

    def args() -> dict[str, Any]:  # one copy per application: a shared dict would dump as a YAML alias
        return {
            "settings": settings_document(settings, only_changes=True),
            "spec": spec.model_dump(mode="json", exclude_none=True),
        }

    return {
        "proxy_location": spec.serve.proxy_location,
        "http_options": http_options(settings),
        "grpc_options": grpc_options(settings),
        "logging_config": {"log_level": "INFO", "enable_access_log": False, "encoding": "TEXT"},
        "applications": [
            {
                "name": spec.serve.app_name,
                "route_prefix": spec.serve.route_prefix,
                "import_path": "serve_apps.app:app_builder",
                "args": args(),
            },
            {
                "name": spec.serve.grpc_app_name,
                "route_prefix": GRPC_ROUTE_PREFIX,
                "import_path": "serve_apps.app:grpc_app_builder",
                "args": args(),
            },
        ],
    }


SERVE_YAML_HEADER = """\
# `serve deploy deploy/serve.yaml` config of the `chronoverse` Serve application and its gRPC API
# `chronoverse-grpc` (the same apps as `chronoverse up`), rendered by
# serve_apps.app.dump_serve_config(Settings(), <deploy/chronoverse.yaml>):
#   * ports are explicit (HTTP SERVER_PORT, gRPC GRPC_PORT; Serve's defaults clash with ClickHouse);
#   * deployment options (fractional CPUs, max_ongoing_requests, autoscaling_config) come from
#     `args.spec` (= deploy/chronoverse.yaml) through serve_apps.app:app_builder -- no num_replicas;
#   * `args.settings` holds only values that differ from the defaults (none here).  For a real
#     cluster render one from the environment and keep it private: it may carry secrets.
# Regenerate: python -c "from serve_apps.app import write_default_serve_yaml; write_default_serve_yaml()"
"""


def dump_serve_config(settings: Settings, spec: ClusterSpec) -> str:
    """:func:`render_serve_config` as the YAML text of ``deploy/serve.yaml`` (with its header)."""
    body = yaml.safe_dump(
        render_serve_config(settings, spec), sort_keys=False, default_flow_style=False, width=110
    )
    return SERVE_YAML_HEADER + body


def write_default_serve_yaml(root: str = ".") -> None:
    """Rewrite ``<root>/deploy/serve.yaml`` from the defaults and ``<root>/deploy/chronoverse.yaml``."""
    from pathlib import Path

    from domain.topology import ClusterSpec as _Spec

    base = Path(root) / "deploy"
    spec = _Spec.model_validate(yaml.safe_load((base / "chronoverse.yaml").read_text()) or {})
    (base / "serve.yaml").write_text(dump_serve_config(Settings(), spec))
