"""Workflow payload validation per kind (reference §4, plus our ``RAY`` kind, SPEC §5.7).

A payload arrives as JSON text holding an object.  Malformed input raises :class:`~domain.errors.Invalid`
(HTTP 400); a well-formed ``timeout`` above the kind's maximum raises
:class:`~domain.errors.PreconditionFailed` (HTTP 412), as in the seed.  Messages name the field
(``payload.timeout``).  Durations are Go duration strings parsed by :mod:`domain.durations`; a
non-string ``timeout`` is ignored and the kind's default used (seed behaviour).

The returned models are what runners consume: :class:`HeartbeatPayload`, :class:`ContainerPayload`,
:class:`RayPayload`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from domain.durations import format_duration, parse_duration
from domain.enums import WorkflowKind
from domain.errors import Invalid, PreconditionFailed
from domain.idempotency import canonical_json
from domain.topology import parse_bytes

HEARTBEAT_DEFAULT_TIMEOUT = timedelta(seconds=10)
HEARTBEAT_MAX_TIMEOUT = timedelta(minutes=5)
HEARTBEAT_DEFAULT_STATUS = 200
CONTAINER_DEFAULT_TIMEOUT = timedelta(seconds=30)
CONTAINER_MAX_TIMEOUT = timedelta(hours=1)
RAY_DEFAULT_TIMEOUT = timedelta(minutes=10)
RAY_MAX_TIMEOUT = timedelta(hours=24)
RAY_DEFAULT_NUM_CPUS = 1.0
RAY_MAX_NUM_CPUS = 64.0
RAY_MAX_NUM_GPUS = 8.0
RAY_MAX_MEMORY = 256 * 1024**3
#: ``runtime_env`` keys a RAY workflow may set (the rest of Ray's options are cluster policy).
RAY_RUNTIME_ENV_KEYS = frozenset({"env_vars", "pip", "uv", "working_dir", "py_modules", "excludes", "config"})
_RAY_FIELDS = frozenset(
    {"callable", "args", "kwargs", "runtime_env", "num_cpus", "num_gpus", "memory", "timeout"}
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_CALLABLE = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HeartbeatPayload(_Payload):
    """HTTP GET ``endpoint`` with ``headers``; success iff the status equals ``expected_status_code``."""

    endpoint: str
    expected_status_code: int = HEARTBEAT_DEFAULT_STATUS
    headers: dict[str, list[str]] = {}
    timeout: timedelta = HEARTBEAT_DEFAULT_TIMEOUT


class ContainerPayload(_Payload):
    """Run ``image`` with ``cmd`` and ``env`` (``KEY=VALUE``) for at most ``timeout``."""

    image: str
    cmd: list[str] = []
    env: dict[str, str] = {}
    timeout: timedelta = CONTAINER_DEFAULT_TIMEOUT


class RayPayload(_Payload):
    """Call ``callable`` (``module:function``) with ``args``/``kwargs`` as a Ray task."""

    callable: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    runtime_env: dict[str, Any] = {}
    num_cpus: float = RAY_DEFAULT_NUM_CPUS
    num_gpus: float = 0.0
    memory: int | None = None  # bytes
    timeout: timedelta = RAY_DEFAULT_TIMEOUT

    @property
    def module(self) -> str:
        return self.callable.split(":", 1)[0]

    @property
    def function(self) -> str:
        return self.callable.split(":", 1)[1]


Payload = HeartbeatPayload | ContainerPayload | RayPayload


def parse_payload_text(text: str | Mapping[str, Any]) -> dict[str, Any]:
    """Decode the payload JSON text; it must hold an object.  A mapping is accepted as already decoded."""
    if isinstance(text, Mapping):
        return dict(text)
    if not isinstance(text, str):
        raise Invalid("invalid payload format: payload must be a JSON object encoded as a string")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid(f"invalid payload format: {exc.msg}") from None
    if not isinstance(value, dict):
        raise Invalid("invalid payload format: payload must be a JSON object")
    return value


def validate_payload(kind: WorkflowKind, payload: str | Mapping[str, Any]) -> Payload:
    """Validate ``payload`` (JSON text or decoded object) for ``kind`` and return the typed payload.

    Raises ``Invalid`` (400) for malformed payloads and ``PreconditionFailed`` (412) for a timeout
    above the kind's maximum.
    """
    data = parse_payload_text(payload)
    if kind == WorkflowKind.HEARTBEAT:
        return _heartbeat(data)
    if kind == WorkflowKind.CONTAINER:
        return _container(data)
    if kind == WorkflowKind.RAY:
        return _ray(data)
    raise Invalid(f"kind: unsupported workflow kind {kind!r}")


def build_hash(payload: Payload) -> str | None:
    """What a rebuild depends on (reference §4): CONTAINER ``sha256({"image": image})``; RAY the
    ``runtime_env`` (a new environment must be prepared); HEARTBEAT has no build (``None``)."""
    if isinstance(payload, ContainerPayload):
        # Same bytes as the seed's json.Marshal(struct{Image string `json:"image"`}).
        marshalled = json.dumps({"image": payload.image}, separators=(",", ":"))
        return hashlib.sha256(marshalled.encode()).hexdigest()
    if isinstance(payload, RayPayload):
        return hashlib.sha256(canonical_json({"runtime_env": payload.runtime_env}).encode()).hexdigest()
    return None


# ------------------------------------------------------------------------------------------------
# per kind
# ------------------------------------------------------------------------------------------------


def _heartbeat(data: dict[str, Any]) -> HeartbeatPayload:
    endpoint = data.get("endpoint")
    if endpoint is None or endpoint == "":
        raise Invalid("payload.endpoint is required")
    if not isinstance(endpoint, str):
        raise Invalid("payload.endpoint must be a string")
    status = data.get("expected_status_code")
    if status is None:
        status = HEARTBEAT_DEFAULT_STATUS
    else:
        status = _integral(status, "payload.expected_status_code")
        if not 100 <= status <= 599:
            raise Invalid("payload.expected_status_code must be between 100 and 599")
    return HeartbeatPayload(
        endpoint=endpoint,
        expected_status_code=status,
        headers=_headers(data.get("headers")),
        timeout=_timeout(data.get("timeout"), HEARTBEAT_DEFAULT_TIMEOUT, HEARTBEAT_MAX_TIMEOUT),
    )


def _container(data: dict[str, Any]) -> ContainerPayload:
    image = data.get("image")
    if image is None or image == "":
        raise Invalid("payload.image is required")
    if not isinstance(image, str) or not image.strip():
        raise Invalid("payload.image must be a non-empty string")
    cmd = data.get("cmd")
    if cmd is None:
        cmd = []
    elif not isinstance(cmd, list):
        raise Invalid("payload.cmd must be an array of strings")
    for index, item in enumerate(cmd):
        if not isinstance(item, str):
            raise Invalid(f"payload.cmd[{index}] must be a string")
    env = data.get("env")
    if env is None:
        env = {}
    elif not isinstance(env, dict):
        raise Invalid("payload.env must be an object of string values")
    for key, value in env.items():
        if not key or "=" in key:
            raise Invalid(f"payload.env: invalid variable name {key!r}")
        if not isinstance(value, str):
            raise Invalid(f"payload.env.{key} must be a string")
    return ContainerPayload(
        image=image,
        cmd=list(cmd),
        env=dict(env),
        timeout=_timeout(data.get("timeout"), CONTAINER_DEFAULT_TIMEOUT, CONTAINER_MAX_TIMEOUT),
    )


def _ray(data: dict[str, Any]) -> RayPayload:
    for key in data:
        if key not in _RAY_FIELDS:
            raise Invalid(f"payload.{key} is not a field of a RAY payload")
    target = data.get("callable")
    if target is None or target == "":
        raise Invalid("payload.callable is required")
    if not isinstance(target, str) or not _CALLABLE.match(target):
        raise Invalid("payload.callable must look like 'package.module:function'")
    args = data.get("args")
    if args is None:
        args = []
    elif not isinstance(args, list):
        raise Invalid("payload.args must be an array")
    kwargs = data.get("kwargs")
    if kwargs is None:
        kwargs = {}
    elif not isinstance(kwargs, dict):
        raise Invalid("payload.kwargs must be an object")
    for key in kwargs:
        if not key.isidentifier():
            raise Invalid(f"payload.kwargs: {key!r} is not a valid keyword argument name")
    return RayPayload(
        callable=target,
        args=list(args),
        kwargs=dict(kwargs),
        runtime_env=_runtime_env(data.get("runtime_env")),
        num_cpus=_resource(data.get("num_cpus"), "payload.num_cpus", RAY_DEFAULT_NUM_CPUS, RAY_MAX_NUM_CPUS),
        num_gpus=_resource(data.get("num_gpus"), "payload.num_gpus", 0.0, RAY_MAX_NUM_GPUS),
        memory=_memory(data.get("memory")),
        timeout=_timeout(data.get("timeout"), RAY_DEFAULT_TIMEOUT, RAY_MAX_TIMEOUT),
    )


# ------------------------------------------------------------------------------------------------
# fields
# ------------------------------------------------------------------------------------------------


def _timeout(raw: object, default: timedelta, maximum: timedelta) -> timedelta:
    if not isinstance(raw, str):
        # Seed behaviour: a missing or non-string timeout silently takes the default.
        return default
    try:
        # (An empty string is checked here: domain.durations.parse_duration("") raises IndexError.)
        if not raw.strip():
            raise ValueError("empty duration")
        value = parse_duration(raw)
    except ValueError:
        raise Invalid(f"payload.timeout: {raw!r} is not a duration such as 500ms, 30s or 5m") from None
    if value <= timedelta(0):
        raise Invalid("payload.timeout must be greater than 0")
    if value > maximum:
        raise PreconditionFailed(f"payload.timeout must be at most {format_duration(maximum)}")
    return value


def _integral(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{field} must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise Invalid(f"{field} must be an integer")
        return int(value)
    return value


def _headers(raw: object) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise Invalid("payload.headers must be an object of strings or string arrays")
    headers: dict[str, list[str]] = {}
    for name, value in raw.items():
        if not name:
            raise Invalid("payload.headers: header names must not be empty")
        if isinstance(value, str):
            headers[name] = [value]
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            headers[name] = list(value)
        else:
            raise Invalid(f"payload.headers.{name} must be a string or an array of strings")
    return headers


def _runtime_env(raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise Invalid("payload.runtime_env must be an object")
    for key in raw:
        if key not in RAY_RUNTIME_ENV_KEYS:
            allowed = ", ".join(sorted(RAY_RUNTIME_ENV_KEYS))
            raise Invalid(f"payload.runtime_env.{key} is not allowed (allowed: {allowed})")
    env_vars = raw.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, dict):
            raise Invalid("payload.runtime_env.env_vars must be an object of string values")
        for key, value in env_vars.items():
            if not isinstance(value, str):
                raise Invalid(f"payload.runtime_env.env_vars.{key} must be a string")
    return dict(raw)


def _resource(raw: object, field: str, default: float, maximum: float) -> float:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise Invalid(f"{field} must be a number")
    if not 0 <= raw <= maximum:
        raise Invalid(f"{field} must be between 0 and {maximum:g}")
    return float(raw)


def _memory(raw: object) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise Invalid("payload.memory must be a byte count or a size such as 512Mi or 2Gi")
    try:
        value = parse_bytes(raw)
    except ValueError:
        raise Invalid("payload.memory must be a byte count or a size such as 512Mi or 2Gi") from None
    if not 0 < value <= RAY_MAX_MEMORY:
        raise Invalid(f"payload.memory must be between 1 byte and {RAY_MAX_MEMORY // 1024**3}Gi")
    return value
