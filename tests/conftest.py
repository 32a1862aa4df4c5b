"""Session fixtures shared by the whole suite.

* ``stack`` — embedded PostgreSQL, Redis and the tansu broker (plus a chdb directory and, when one can
  be had, a Docker engine) started by :mod:`cluster.localstack` — the code behind ``chronoverse up`` —
  on free ports in a temporary directory, migrated, topics created.
* ``ray_cluster`` — a fresh local Ray cluster in this process (``ray.init(address="local")``).

Both are lazy: unit tests request neither and run with no services at all.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from listen_ports import listen_port

from cluster.clusterfile import load_cluster_spec
from cluster.localstack import (
    INFRA,
    LocalStack,
    StackError,
    create_database,
    ensure_busybox_image,
)
from cluster.localstack.base import run_sync
from domain.config import (
    AppConfig,
    ClickHouseConfig,
    DockerConfig,
    KafkaConfig,
    PostgresConfig,
    RedisConfig,
    Section,
    Settings,
    StackConfig,
)
from domain.enums import StackComponent
from domain.topology import ClusterSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_FILE = REPO_ROOT / "deploy" / "chronoverse.yaml"


@dataclass
class StackHandle:
    """What the ``stack`` fixture yields."""

    settings: Settings
    spec: ClusterSpec
    state_dir: Path
    docker_available: bool
    #: Why Docker is unavailable (empty when it is available); tests show it in their skip reason.
    docker_reason: str = ""
    _db_names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def create_database(self) -> PostgresConfig:
        """A fresh, EMPTY database (not migrated) on the stack's server."""
        return create_database(self.settings.postgres, f"test_{os.getpid()}_{next(self._db_names)}")

    def busybox_image(self) -> str:
        """The offline image ``local/busybox:1`` on the stack's engine; skips without Docker."""
        if not self.docker_available:
            pytest.skip(f"no Docker engine: {self.docker_reason}")
        import docker

        client = docker.DockerClient(base_url=self.settings.docker.host)
        try:
            return ensure_busybox_image(client)
        finally:
            client.close()


def _test_settings(state_dir: Path) -> Settings:
    # Built from defaults, not the environment: a developer's POSTGRES_HOST must not redirect tests.
    return Settings().model_copy(
        update={
            "app": AppConfig(env="test"),
            # Ports below the ephemeral range: nothing else grabs them before the services bind.
            "postgres": PostgresConfig(host="127.0.0.1", port=listen_port()),
            "redis": RedisConfig(host="127.0.0.1", port=listen_port()),
            # tansu makes every group join wait session_timeout/2 (infra-notes §1a).
            "kafka": KafkaConfig(brokers=f"127.0.0.1:{listen_port()}", session_timeout=timedelta(seconds=2),
                                 heartbeat_interval=timedelta(milliseconds=300)),
            "clickhouse": ClickHouseConfig(backend="chdb", chdb_path=str(state_dir / "clickhouse")),
            # An engine named by DOCKER_HOST (CI) is used as is; without one the stack tries the default
            # socket, then its own dockerd.
            "docker": DockerConfig(host=os.environ.get("DOCKER_HOST", "")),
            "stack": StackConfig(state_dir=str(state_dir), cluster_file=str(CLUSTER_FILE)),
        }
    )


def _prepare(settings: Settings, spec: ClusterSpec) -> None:
    from ingest.topics import ensure_topics
    from store.migrate import migrate

    run_sync(lambda: migrate(settings.postgres), timeout=120)
    run_sync(lambda: ensure_topics(settings.kafka, spec.topics), timeout=60)


def _config_variables() -> list[str]:
    sections = [field.annotation for field in Settings.model_fields.values()]
    prefixes = tuple(s.env_prefix for s in sections if isinstance(s, type) and issubclass(s, Section)
                     and s.env_prefix)
    return [var for var in os.environ if var.startswith(prefixes) or var in ("ENV", "RAY_ADDRESS")]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No configuration variable from the developer's shell (POSTGRES_*, REDIS_*, CHRONOVERSE_*, …) and
    a working directory (``tmp_path``) without ``.env`` or ``.chronoverse``."""
    for var in _config_variables():
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture(scope="session")
def stack() -> Iterator[StackHandle]:
    """Embedded services on free ports in a temp dir, migrated, topics created; stopped at the end."""
    state_dir = Path(tempfile.mkdtemp(prefix="cv-test-"))
    state_dir.chmod(0o755)  # PostgreSQL runs as an unprivileged user when we are root
    settings = _test_settings(state_dir)
    spec = load_cluster_spec(CLUSTER_FILE)
    local = LocalStack(settings, spec, state_dir=state_dir, test_mode=True,
                       progress=lambda line: print(f"[stack] {line}"))
    try:
        state = local.up(INFRA)
        docker = state.components[StackComponent.DOCKER]
        docker_ok = docker.unavailable is None and bool(docker.endpoint)
        docker_host = docker.endpoint if docker_ok else ""
        settings = settings.model_copy(update={"docker": DockerConfig(host=docker_host)})
        _prepare(settings, spec)
    except BaseException:
        local.down()
        shutil.rmtree(state_dir, ignore_errors=True)
        raise
    try:
        yield StackHandle(settings=settings, spec=spec, state_dir=state_dir, docker_available=docker_ok,
                          docker_reason=docker.unavailable or "")
    finally:
        problems = local.down()
        shutil.rmtree(state_dir, ignore_errors=True)
        if problems:
            raise StackError("stack", "; ".join(problems))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A new local Ray cluster for e2e tests (4 logical CPUs, ``low``/``high`` resources), with the
    Serve ingress ``chronoverse up`` gives a single-node head (``CHRONOVERSE_RAY_SERVE_INGRESS``,
    default Serve's HAProxy; its ports free, its files in the cluster's temp dir), so the e2e suite
    tests what users run.

    Ports: ``address="local"`` starts the GCS on port 0, so the kernel picks a free port at bind time
    (nothing to collide with); other internal ports are likewise kernel-picked, except the dashboard
    agent's HTTP port (52365, not settable through ``ray.init``): if it is taken, Ray only disables
    that agent's HTTP endpoint, which the tests do not use.  A private ``_temp_dir`` keeps this
    cluster's address file away from ``/tmp/ray`` so no other ``ray.init()`` can attach to it.
    """
    os.environ["RAY_AUTH_MODE"] = "disabled"  # one auth mode everywhere (ray-notes §8.1)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    for var in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT"):
        os.environ.pop(var, None)
    import ray

    from serve_apps.app import haproxy_ingress_env

    temp_dir = tempfile.mkdtemp(prefix="cvr-", dir="/tmp")  # short: unix socket paths live below it
    ray_config = Settings().ray
    ingress: dict[str, str] = {}
    # The default, unless the run asks for the other ingress (CHRONOVERSE_RAY_SERVE_INGRESS=proxy).
    if os.environ.get("CHRONOVERSE_RAY_SERVE_INGRESS", ray_config.serve_ingress) == "haproxy":
        ingress = haproxy_ingress_env(
            work_dir=f"{temp_dir}/hap",  # short: HAProxy's socket path limit
            # Bound by HAProxy only once Serve starts: ports nothing else is handed meanwhile.
            stats_port=listen_port(),
            metrics_port=listen_port(),
            fallback_http_port=listen_port(),
            fallback_grpc_port=listen_port(),
            throughput_optimized=ray_config.serve_throughput_optimized,
        )
    # Serve kills a proxy that is not ready within RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S (5 s), and
    # serve.start() then fails with ActorDiedError: on a loaded CI machine the HAProxy manager can
    # need longer than that to come up.  Give it a minute (still bounded: a broken proxy fails).
    ray_env = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
               **{var: os.environ[var] for var in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S",
                                                   "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S")
                  if var in os.environ},
               **ingress}
    # As under `chronoverse up`, only the Ray processes get the ingress variables (Serve's controller
    # and replicas inherit them from the raylet), not this driver: nor then the other clusters that
    # tests start from it (their own heads decide their ingress).
    saved = {var: os.environ.get(var) for var in ray_env}
    os.environ.update(ray_env)
    try:
        context = ray.init(address="local", num_cpus=4, resources={"low": 16, "high": 4},
                           include_dashboard=False, namespace="chronoverse-test", logging_level=logging.ERROR,
                           _temp_dir=temp_dir,
                           # Actor output stays in the session's log files; forwarding every
                           # access-log line to the test runner's console only floods CI output.
                           log_to_driver=False)
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    try:
        yield context
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
