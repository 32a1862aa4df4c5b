"""The cluster file (``deploy/chronoverse.yaml``): resource classes, topics, Serve deployments and
actor pools with their scaling policies.  Pure pydantic; reading YAML is :mod:`cluster.clusterfile`.

Numbers default to the seed's compose limits/reservations (SPEC §1): services 0.25/0.1 CPU and
256/128 MiB; low-resource workers 0.5/0.25 CPU and 2/1 GiB; high-resource 2/1 CPU and 4/2 GiB.
Ray requests use the *reservation*; the *limit* is what container jobs get as real cgroup limits.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from domain.enums import ResourceClass

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: object) -> int:
    """``"256Mi"`` → 268435456.  Plain integers are bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 256Mi, 2Gi or 512MB")
    if isinstance(value, int):
        return value
    match = _BYTES.match(str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"invalid size {value!r}: expected a size such as 256Mi, 2Gi or 512MB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


Bytes = Annotated[int, BeforeValidator(parse_bytes), Field(ge=0)]
Cpu = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ResourceClassSpec(_Strict):
    """A compose-style limit/reservation pair.  ``resource`` is the Ray custom resource requested."""

    cpu_limit: Cpu
    cpu_reservation: Cpu
    memory_limit: Bytes
    memory_reservation: Bytes
    resource: ResourceClass | None = None

    @model_validator(mode="after")
    def _reservation_within_limit(self) -> ResourceClassSpec:
        if self.cpu_reservation > self.cpu_limit:
            raise ValueError("cpu_reservation must not exceed cpu_limit")
        if self.memory_reservation > self.memory_limit:
            raise ValueError("memory_reservation must not exceed memory_limit")
        return self

    def ray_options(self) -> dict[str, Any]:
        """Ray actor options requesting the reservation (and one unit of the custom resource)."""
        opts: dict[str, Any] = {"num_cpus": self.cpu_reservation, "memory": self.memory_reservation}
        if self.resource is not None:
            opts["resources"] = {self.resource.value: 1}
        return opts


def _default_classes() -> dict[str, ResourceClassSpec]:
    gib, mib = 1024**3, 1024**2
    return {
        "service": ResourceClassSpec(
            cpu_limit=0.25, cpu_reservation=0.1, memory_limit=256 * mib, memory_reservation=128 * mib
        ),
        "low": ResourceClassSpec(
            cpu_limit=0.5,
            cpu_reservation=0.25,
            memory_limit=2 * gib,
            memory_reservation=1 * gib,
            resource=ResourceClass.LOW,
        ),
        "high": ResourceClassSpec(
            cpu_limit=2.0,
            cpu_reservation=1.0,
            memory_limit=4 * gib,
            memory_reservation=2 * gib,
            resource=ResourceClass.HIGH,
        ),
    }


class TopicSpec(_Strict):
    partitions: int = Field(ge=1)
    replication_factor: int = Field(default=1, ge=1)
    retention: str = "168h"


def _default_topics() -> dict[str, TopicSpec]:
    return {
        "workflows": TopicSpec(partitions=2),
        "jobs": TopicSpec(partitions=4),
        "job_logs": TopicSpec(partitions=4),
        "analytics": TopicSpec(partitions=2),
    }


class ServeAutoscaling(_Strict):
    """The subset of Serve's ``AutoscalingConfig`` we set (ray-notes §3.3)."""

    min_replicas: int = Field(default=1, ge=0)
    initial_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int = Field(default=2, ge=1)
    target_ongoing_requests: float = Field(default=8.0, gt=0)
    upscale_delay_s: float = Field(default=5.0, ge=0)
    downscale_delay_s: float = Field(default=60.0, ge=0)
    look_back_period_s: float = Field(default=15.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> ServeAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class DeploymentSpec(_Strict):
    resource_class: str = "service"
    max_ongoing_requests: int = Field(default=100, ge=1)
    autoscaling_config: ServeAutoscaling = Field(default_factory=ServeAutoscaling)


SERVE_DEPLOYMENTS = (
    "Gateway",
    "UsersService",
    "WorkflowsService",
    "JobsService",
    "NotificationsService",
    "AnalyticsService",
    "GrpcGateway",
)


def _default_deployments() -> dict[str, DeploymentSpec]:
    return {name: DeploymentSpec() for name in SERVE_DEPLOYMENTS}


class ServeSpec(_Strict):
    app_name: str = "chronoverse"
    # The second Serve application: the gRPC API (ingress GrpcGateway; clients send this name as
    # the `application` metadata).
    grpc_app_name: str = "chronoverse-grpc"
    route_prefix: str = "/"
    proxy_location: Literal["EveryNode", "HeadOnly", "Disabled"] = "EveryNode"
    deployments: dict[str, DeploymentSpec] = Field(default_factory=_default_deployments)


class ScalingPolicySpec(_Strict):
    """Pool autoscaling thresholds (seed triggers: lag > 1000, queue depth > 100, CPU > 70 %)."""

    lag_high: int = Field(default=1000, ge=1)
    queue_depth_high: int = Field(default=100, ge=1)
    cpu_high: float = Field(default=0.7, gt=0, le=1)
    busy_high: float = Field(default=0.8, gt=0, le=1)
    # Scale down only when every signal is below this fraction of its high threshold (hysteresis).
    low_fraction: float = Field(default=0.3, gt=0, lt=1)
    upscale_delay_s: float = Field(default=5.0, ge=0)
    downscale_delay_s: float = Field(default=60.0, ge=0)
    max_step_up: int = Field(default=2, ge=1)
    max_step_down: int = Field(default=1, ge=1)


class PoolSpec(_Strict):
    """An actor pool: N named actors of one resource class, optionally fed by a consumer group."""

    resource_class: str
    min_actors: int = Field(default=1, ge=0)
    max_actors: int = Field(default=1, ge=1)
    max_in_flight: int = Field(default=16, ge=1)
    topic: str | None = None
    consumer_group: str | None = None
    consumers: int = Field(default=1, ge=1)
    max_restarts: int = Field(default=-1, ge=-1)
    scaling: ScalingPolicySpec = Field(default_factory=ScalingPolicySpec)

    @model_validator(mode="after")
    def _bounds(self) -> PoolSpec:
        if self.min_actors > self.max_actors:
            raise ValueError("min_actors must not exceed max_actors")
        if (self.topic is None) != (self.consumer_group is None):
            raise ValueError("topic and consumer_group go together")
        return self


def _default_pools() -> dict[str, PoolSpec]:
    return {
        "scheduler": PoolSpec(resource_class="low", min_actors=1, max_actors=2),
        "outbox-relay": PoolSpec(resource_class="low", min_actors=1, max_actors=2),
        "workflow-worker": PoolSpec(
            resource_class="low",
            min_actors=1,
            max_actors=2,
            topic="workflows",
            consumer_group="workflow-worker",
        ),
        "execution-worker": PoolSpec(
            resource_class="high",
            min_actors=1,
            max_actors=4,
            max_in_flight=32,
            topic="jobs",
            consumer_group="execution-worker",
        ),
        "joblogs-processor": PoolSpec(
            resource_class="low",
            min_actors=1,
            max_actors=2,
            topic="job_logs",
            consumer_group="joblogs-processor",
        ),
        "analytics-processor": PoolSpec(
            resource_class="low",
            min_actors=1,
            max_actors=2,
            topic="analytics",
            consumer_group="analytics-processor",
        ),
    }


class LocalNodeSpec(_Strict):
    """Logical resources a single local head advertises (``chronoverse up``).  Logical CPUs are
    bookkeeping: a laptop-sized head must still fit every pool's reservation."""

    num_cpus: float = Field(default=8, gt=0)
    resources: dict[str, float] = Field(default_factory=lambda: {"low": 16.0, "high": 4.0})


class ClusterSpec(_Strict):
    resource_classes: dict[str, ResourceClassSpec] = Field(default_factory=_default_classes)
    topics: dict[str, TopicSpec] = Field(default_factory=_default_topics)
    serve: ServeSpec = Field(default_factory=ServeSpec)
    pools: dict[str, PoolSpec] = Field(default_factory=_default_pools)
    local: LocalNodeSpec = Field(default_factory=LocalNodeSpec)

    @model_validator(mode="after")
    def _references(self) -> ClusterSpec:
        for name, dep in self.serve.deployments.items():
            if dep.resource_class not in self.resource_classes:
                raise ValueError(
                    f"serve.deployments.{name}.resource_class: unknown class {dep.resource_class!r}"
                )
        for name, pool in self.pools.items():
            if pool.resource_class not in self.resource_classes:
                raise ValueError(f"pools.{name}.resource_class: unknown class {pool.resource_class!r}")
            if pool.topic is not None:
                topic = self.topics.get(pool.topic)
                if topic is None:
                    raise ValueError(f"pools.{name}.topic: unknown topic {pool.topic!r}")
                if pool.consumers > topic.partitions:
                    raise ValueError(
                        f"pools.{name}.consumers: {pool.consumers} consumers exceed the "
                        f"{topic.partitions} partitions of {pool.topic!r}"
                    )
        return self

    def pool_class(self, pool: str) -> ResourceClassSpec:
        return self.resource_classes[self.pools[pool].resource_class]
