"""Configuration shapes, one model per area, with the seed's defaults (reference §10).

These are plain pydantic models so that every layer can accept its own section.  Reading them
from the environment (and turning a bad value into one clear line) is the composition root's job:
see :mod:`cluster.settings`, which subclasses each model as a ``BaseSettings`` with the seed's
``env_prefix``.  Field names are the seed's variable names minus the prefix, lower-cased.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from domain.durations import GoDuration, format_duration

_SIZE = re.compile(r"^\d+(b|k|kb|m|mb|g|gb)?$", re.IGNORECASE)


def _memory_size(value: str) -> str:
    if not _SIZE.match(value.strip()):
        raise ValueError("expected a Redis memory size such as 100mb, 512m or 1gb")
    return value.strip().lower()


MemorySize = Annotated[str, AfterValidator(_memory_size)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Port = Annotated[int, Field(ge=0, le=65535)]


class Section(BaseModel):
    """Base of every config area: immutable, unknown keys rejected, with its env prefix."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    env_prefix: ClassVar[str] = ""


class AppConfig(Section):
    env_prefix: ClassVar[str] = ""
    env: Literal["development", "production", "test"] = "development"


class ServerConfig(Section):
    """HTTP gateway (``SERVER_*``).  ``port`` is where the Serve HTTP proxy listens."""

    env_prefix: ClassVar[str] = "SERVER_"
    host: str = "127.0.0.1"
    # Deliberate change: the seed's gateway listened on 8080; Ray Serve's proxy is ours, on 8000.
    port: Port = 8000
    request_timeout: GoDuration = timedelta(seconds=5)
    read_timeout: GoDuration = timedelta(seconds=2)
    read_header_timeout: GoDuration = timedelta(seconds=1)
    idle_timeout: GoDuration = timedelta(seconds=30)
    request_body_limit: PositiveInt = 4_194_304
    session_expiry: GoDuration = timedelta(hours=2)
    csrf_expiry: GoDuration = timedelta(hours=2)
    csrf_hmac_secret: SecretStr = SecretStr("chronoverse-dev-csrf-secret-change-me")
    host_url: str = "http://localhost:8000"
    allowed_origins: str = "http://localhost:3001,"
    same_site_mode: Literal["LAX", "STRICT", "NONE"] = "STRICT"
    login_rate_limit: PositiveInt = 10
    login_rate_window: GoDuration = timedelta(minutes=15)
    # Ours: set when every request reaches the gateway through a proxy that appends the client's
    # address to X-Forwarded-For (deploy/nginx).  Only then is the login limit per address applied
    # to that header's last entry; otherwise the header is client-controlled and ignored.
    trust_forwarded_for: bool = False

    @property
    def origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]


class GrpcConfig(Section):
    """Serve's gRPC proxy (``GRPC_*``).  Port 9000 is ClickHouse's, so we default to 9001."""

    env_prefix: ClassVar[str] = "GRPC_"
    host: str = "127.0.0.1"
    port: Port = 9001
    request_timeout: GoDuration = timedelta(milliseconds=500)
    tls_enabled: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @field_validator("tls_enabled")
    @classmethod
    def _no_tls_in_serve(cls, enabled: bool) -> bool:
        # Refused rather than ignored: a user who asks for TLS must not get plaintext silently.
        if enabled:
            raise ValueError("Ray Serve's gRPC proxy serves plaintext only; terminate TLS in front of "
                             "it (docs/production.md) and leave this false")
        return enabled


class PostgresConfig(Section):
    env_prefix: ClassVar[str] = "POSTGRES_"
    host: str = "localhost"
    port: Port = 5432
    user: str = "postgres"
    password: SecretStr = SecretStr("postgres")
    db: str = "chronoverse"
    max_conns: PositiveInt = 10
    min_conns: NonNegativeInt = 5
    max_conn_life: GoDuration = timedelta(hours=1)
    max_conn_idle: GoDuration = timedelta(minutes=30)
    dial_timeout: GoDuration = timedelta(seconds=5)
    tls_enabled: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def dsn(self, *, with_password: bool = True) -> str:
        password = self.password.get_secret_value() if with_password else "***"
        auth = f"{self.user}:{password}@" if password else f"{self.user}@"
        return f"postgresql://{auth}{self.host}:{self.port}/{self.db}"


class ClickHouseConfig(Section):
    """Log store.  ``backend=chdb`` embeds ClickHouse in-process (one owning process per ``chdb_path``);
    ``backend=http`` talks to a real server through clickhouse-connect (give HTTP ports in ``hosts``)."""

    env_prefix: ClassVar[str] = "CLICKHOUSE_"
    backend: Literal["chdb", "http"] = "chdb"
    chdb_path: str = ".chronoverse/clickhouse"
    hosts: str = "localhost:9000"
    database: str = "default"
    username: str = "default"
    password: SecretStr = SecretStr("")
    max_open_conns: PositiveInt = 10
    max_idle_conns: NonNegativeInt = 5
    conn_max_lifetime: GoDuration = timedelta(hours=1)
    dial_timeout: GoDuration = timedelta(seconds=5)
    tls_enabled: bool = False
    tls_ca_file: str = ""

    @property
    def host_list(self) -> list[tuple[str, int]]:
        out = []
        for item in self.hosts.split(","):
            item = item.strip()
            if not item:
                continue
            host, _, port = item.rpartition(":")
            out.append((host or item, int(port) if port.isdigit() else 8123))
        return out


class RedisConfig(Section):
    """Redis holds sessions, locks, caches and live log streams.

    Deliberate change from the seed (``allkeys-lru``): the default eviction policy is
    ``noeviction`` because sessions and distributed locks must never be silently dropped
    (SPEC §5.5).  Every cache entry carries a TTL, so memory stays bounded without eviction.
    """

    env_prefix: ClassVar[str] = "REDIS_"
    host: str = "localhost"
    port: Port = 6379
    password: SecretStr = SecretStr("")
    db: NonNegativeInt = 0
    pool_size: PositiveInt = 10
    min_idle_conns: NonNegativeInt = 5
    read_timeout: GoDuration = timedelta(seconds=5)
    write_timeout: GoDuration = timedelta(seconds=5)
    max_memory: MemorySize = "100mb"
    eviction_policy: Literal[
        "noeviction",
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] = "noeviction"
    eviction_policy_sample_size: PositiveInt = 5
    tls_enabled: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


class KafkaConfig(Section):
    env_prefix: ClassVar[str] = "KAFKA_"
    brokers: str = "127.0.0.1:9092"
    consumer_group: str = ""
    topic_replication_factor: PositiveInt = 1
    # tansu makes every group join wait session_timeout/2, so local stacks lower this to 2s.
    session_timeout: GoDuration = timedelta(seconds=10)
    heartbeat_interval: GoDuration = timedelta(seconds=3)
    # Ours (``KAFKA_FETCH_MAX_WAIT``): how long a consumer's fetch may wait on the broker for data.
    # tansu does not answer a waiting fetch when records arrive, so this is added to the delivery
    # latency of every record (aiokafka's default 500ms made a hop cost ~100-250ms); a short wait
    # only costs a few idle fetch requests per second.
    fetch_max_wait: GoDuration = timedelta(milliseconds=50)
    # Ours (``KAFKA_COMMIT_INTERVAL``): the least time between two offset commits of a partition.
    # Committing after every finished call cost a broker round trip per record under load; every
    # handler is idempotent, so a crash replays at most this much already-applied work.  Commits
    # on revoke and shutdown are never delayed.  0 = commit as soon as work finishes.
    commit_interval: GoDuration = timedelta(milliseconds=200)
    tls_enabled: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @property
    def bootstrap_servers(self) -> list[str]:
        return [b.strip() for b in self.brokers.split(",") if b.strip()]


class DockerConfig(Section):
    env_prefix: ClassVar[str] = "DOCKER_"
    host: str = ""  # empty = the docker SDK's default (DOCKER_HOST or /var/run/docker.sock)


class WorkflowsServiceConfig(Section):
    env_prefix: ClassVar[str] = "WORKFLOWS_"
    service_config_fetch_limit: PositiveInt = 10
    cleanup_enabled: bool = True
    cleanup_interval: GoDuration = timedelta(minutes=15)
    cleanup_batch_size: PositiveInt = 1000


class JobsServiceConfig(Section):
    env_prefix: ClassVar[str] = "JOBS_SERVICE_CONFIG_"
    fetch_limit: PositiveInt = 10
    logs_fetch_limit: PositiveInt = 100


class NotificationsServiceConfig(Section):
    env_prefix: ClassVar[str] = "NOTIFICATIONS_SERVICE_CONFIG_"
    fetch_limit: PositiveInt = 1000


class SchedulingWorkerConfig(Section):
    env_prefix: ClassVar[str] = "SCHEDULING_WORKER_"
    # Safety-net poll only: the scheduler is woken by LISTEN/NOTIFY and sleeps until the next due time.
    poll_interval: GoDuration = timedelta(seconds=10)
    context_timeout: GoDuration = timedelta(seconds=5)
    batch_size: PositiveInt = 1000
    redispatch_timeout: GoDuration = timedelta(minutes=2)


class WorkflowWorkerConfig(Section):
    env_prefix: ClassVar[str] = "WORKFLOW_WORKER_"
    image_pull_lock_ttl: GoDuration = timedelta(minutes=10)
    image_pull_wait_timeout: GoDuration = timedelta(minutes=10)
    image_pull_retry_interval: GoDuration = timedelta(milliseconds=500)


class ExecutionWorkerConfig(Section):
    env_prefix: ClassVar[str] = "EXECUTION_WORKER_"
    id: str = ""
    concurrency: NonNegativeInt = 0
    lease_duration: GoDuration = timedelta(seconds=30)
    lease_renew_interval: GoDuration = timedelta(seconds=10)
    system_retry_limit: PositiveInt = 3
    system_retry_backoff: GoDuration = timedelta(seconds=30)
    recovery_interval: GoDuration = timedelta(seconds=15)
    recovery_batch_size: PositiveInt = 100
    job_log_batch_size: PositiveInt = 100
    job_log_batch_interval: GoDuration = timedelta(milliseconds=250)
    job_log_publish_timeout: GoDuration = timedelta(seconds=5)
    job_log_publish_retries: PositiveInt = 3
    job_log_publish_backoff: GoDuration = timedelta(milliseconds=250)
    job_log_live_timeout: GoDuration = timedelta(milliseconds=100)
    job_log_live_buffer_size: PositiveInt = 4096
    # Real cgroup limits for CONTAINER jobs: the high-resource class *limit* (SPEC §1).
    container_cpus: Annotated[float, Field(gt=0)] = 2.0
    container_memory: MemorySize = "4g"
    container_pids_limit: PositiveInt = 512
    container_network: str = "none"


class JoblogsProcessorConfig(Section):
    env_prefix: ClassVar[str] = "JOBLOGS_PROCESSOR_"
    batch_job_logs_size_limit: PositiveInt = 1000
    batch_job_logs_time_interval: GoDuration = timedelta(seconds=2)


class AnalyticsProcessorConfig(Section):
    env_prefix: ClassVar[str] = "ANALYTICS_"
    processor_cleanup_enabled: bool = True
    processor_cleanup_interval: GoDuration = timedelta(minutes=15)
    processor_cleanup_batch_size: PositiveInt = 1000
    processed_events_retention: GoDuration = timedelta(hours=336)


class OutboxRelayConfig(Section):
    env_prefix: ClassVar[str] = "OUTBOX_RELAY_"
    workflow_enabled: bool = True
    jobs_enabled: bool = True
    analytics_enabled: bool = True
    batch_size: PositiveInt = 100
    poll_interval: GoDuration = timedelta(seconds=1)
    context_timeout: GoDuration = timedelta(seconds=10)
    max_attempts: PositiveInt = 10
    retry_backoff: GoDuration = timedelta(seconds=5)
    processing_lease: GoDuration = timedelta(seconds=30)
    worker_id: str = "outbox-relay"
    cleanup_enabled: bool = True
    cleanup_interval: GoDuration = timedelta(minutes=15)
    cleanup_batch_size: PositiveInt = 1000
    published_retention: GoDuration = timedelta(hours=168)

    @field_validator("processing_lease")
    @classmethod
    def _lease_outlasts_a_publish(cls, lease: timedelta, info: ValidationInfo) -> timedelta:
        # A claim holds its rows while publishing and PostgreSQL ends it after the lease (ADR 0007).
        publish = info.data.get("context_timeout")
        if publish is not None and lease <= publish:
            limit = format_duration(publish)
            raise ValueError(f"must be longer than OUTBOX_RELAY_CONTEXT_TIMEOUT ({limit}), "
                             "or a relay's claim would end while it is still publishing")
        return lease


class RayConfig(Section):
    """Where the Ray cluster is and which ports a local head uses.  Every port is explicit:
    several Ray defaults collide with Redis (6379) and ClickHouse (9000)."""

    env_prefix: ClassVar[str] = "CHRONOVERSE_RAY_"
    address: str = ""  # empty = start/own a local head
    gcs_port: Port = 6380
    dashboard_host: str = "127.0.0.1"
    dashboard_port: Port = 8265
    client_server_port: Port = 10001
    metrics_export_port: Port = 8090
    # Below the Linux ephemeral range (32768-60999) so a kernel-picked port can never take them.
    dashboard_agent_listen_port: Port = 28265
    dashboard_agent_grpc_port: Port = 28266
    runtime_env_agent_port: Port = 28267
    node_manager_port: Port = 28270
    object_manager_port: Port = 28271
    min_worker_port: Port = 28300
    max_worker_port: Port = 28999
    auth_mode: Literal["disabled", "token"] = "disabled"
    namespace: str = "chronoverse"
    # How HTTP reaches the Gateway replicas on a single-node head (``chronoverse up``; ADR 0004):
    # ``haproxy`` = Serve's HAProxy ingress (about 2-3x the requests/s of Serve's Python proxy on
    # the API benchmark), ``proxy`` = Serve's default proxy.  ``up --elastic`` always uses ``proxy``
    # (its fake nodes share one host, so per-node HAProxies would share these ports).
    serve_ingress: Literal["haproxy", "proxy"] = "haproxy"
    # RAY_SERVE_THROUGHPUT_OPTIMIZED with the HAProxy ingress (user code on the replica's main loop,
    # gRPC between handles).
    serve_throughput_optimized: bool = True
    # The HAProxy ingress's own ports (Serve's defaults 8404/9101/8500/9500 are in common use).
    haproxy_stats_port: Port = 28272
    haproxy_metrics_port: Port = 28273
    haproxy_fallback_http_port: Port = 28274
    haproxy_fallback_grpc_port: Port = 28275


class StackConfig(Section):
    """The local embedded stack that ``chronoverse up`` owns."""

    env_prefix: ClassVar[str] = "CHRONOVERSE_"
    state_dir: str = ".chronoverse"
    cluster_file: str = "deploy/chronoverse.yaml"


class Settings(BaseModel):
    """The whole configuration tree.  Build it with :func:`cluster.settings.load_settings`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app: AppConfig = Field(default_factory=AppConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    grpc: GrpcConfig = Field(default_factory=GrpcConfig)
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)
    clickhouse: ClickHouseConfig = Field(default_factory=ClickHouseConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    docker: DockerConfig = Field(default_factory=DockerConfig)
    workflows: WorkflowsServiceConfig = Field(default_factory=WorkflowsServiceConfig)
    jobs: JobsServiceConfig = Field(default_factory=JobsServiceConfig)
    notifications: NotificationsServiceConfig = Field(default_factory=NotificationsServiceConfig)
    scheduler: SchedulingWorkerConfig = Field(default_factory=SchedulingWorkerConfig)
    workflow_worker: WorkflowWorkerConfig = Field(default_factory=WorkflowWorkerConfig)
    execution: ExecutionWorkerConfig = Field(default_factory=ExecutionWorkerConfig)
    joblogs: JoblogsProcessorConfig = Field(default_factory=JoblogsProcessorConfig)
    analytics: AnalyticsProcessorConfig = Field(default_factory=AnalyticsProcessorConfig)
    outbox: OutboxRelayConfig = Field(default_factory=OutboxRelayConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    stack: StackConfig = Field(default_factory=StackConfig)
