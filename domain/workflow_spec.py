"""Validation of workflow create/update requests (reference §2.2, §4; checklist items 9-13).

Limits: ``name`` 1-255 characters, ``interval`` 1-10080 minutes, ``max_consecutive_job_failures_allowed``
3-100.  ``log_retention``: CONTAINER/RAY default ``true``; HEARTBEAT is always ``false`` and an explicit
``true`` is rejected.  Ours (SPEC §5.6): ``log_retention`` may also be a Go duration (``"168h"``),
meaning "retain, and expire lines after that long" (``log_retention_ttl_seconds``).
Everything raises :class:`~domain.errors.Invalid` (400) except a payload timeout above the kind's
maximum, which is :class:`~domain.errors.PreconditionFailed` (412).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from uuid import UUID

from domain.durations import parse_duration
from domain.enums import WorkflowKind
from domain.errors import Invalid
from domain.models import WorkflowChanges, WorkflowDraft
from domain.payloads import build_hash, parse_payload_text, validate_payload

NAME_MAX_LENGTH = 255
INTERVAL_MIN = 1
INTERVAL_MAX = 10080  # one week, in minutes
MAX_FAILURES_MIN = 3
MAX_FAILURES_MAX = 100
LOG_RETENTION_TTL_MIN = timedelta(minutes=1)
LOG_RETENTION_TTL_MAX = timedelta(seconds=2**31 - 1)


def parse_kind(kind: str | WorkflowKind | None) -> WorkflowKind:
    """``"HEARTBEAT"|"CONTAINER"|"RAY"`` → enum; anything else is ``Invalid`` naming ``kind``."""
    if kind is None or kind == "":
        raise Invalid("kind is required")
    try:
        return WorkflowKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in WorkflowKind)
        raise Invalid(f"kind must be one of {allowed}") from None


def prepare_create(
    *,
    name: str | None,
    payload: str | Mapping[str, Any] | None,
    kind: str | WorkflowKind | None,
    interval: int | None,
    max_consecutive_job_failures_allowed: int | None,
    log_retention: bool | str | None = None,
) -> WorkflowDraft:
    """Validate a create request and resolve its defaults (log retention, build hash)."""
    checked_name = _name(name)
    checked_kind = parse_kind(kind)
    checked_interval = _interval(interval)
    max_failures = _max_failures(max_consecutive_job_failures_allowed)
    if payload is None or payload == "":
        raise Invalid("payload is required")
    data = parse_payload_text(payload)
    typed = validate_payload(checked_kind, data)
    retain, ttl = _log_retention(checked_kind, log_retention)
    return WorkflowDraft(
        name=checked_name,
        payload=data,
        kind=checked_kind,
        interval=checked_interval,
        max_consecutive_job_failures_allowed=max_failures,
        log_retention=retain,
        log_retention_ttl_seconds=ttl,
        build_hash=build_hash(typed),
    )


def prepare_update(
    *,
    name: str | None,
    payload: str | Mapping[str, Any] | None,
    interval: int | None,
    max_consecutive_job_failures_allowed: int | None,
) -> WorkflowChanges:
    """Validate the kind-independent part of an update (kind and log retention are immutable).

    The payload is only decoded here; :func:`check_payload_for` validates it against the stored kind.
    """
    checked_name = _name(name)
    checked_interval = _interval(interval)
    max_failures = _max_failures(max_consecutive_job_failures_allowed)
    if payload is None or payload == "":
        raise Invalid("payload is required")
    return WorkflowChanges(
        name=checked_name,
        payload=parse_payload_text(payload),
        interval=checked_interval,
        max_consecutive_job_failures_allowed=max_failures,
    )


def check_payload_for(kind: WorkflowKind, changes: WorkflowChanges) -> str | None:
    """Validate an update's payload against the workflow's kind; return the new build hash."""
    return build_hash(validate_payload(kind, changes.payload))


def create_request_fields(user_id: UUID, draft: WorkflowDraft) -> dict[str, Any]:
    """The semantic fields hashed for create idempotency (reference §6.2: resolved log retention)."""
    return {
        "user_id": str(user_id),
        "name": draft.name,
        "payload": draft.payload,
        "kind": draft.kind.value,
        "interval": draft.interval,
        "max_consecutive_job_failures_allowed": draft.max_consecutive_job_failures_allowed,
        "log_retention": draft.log_retention,
        "log_retention_ttl_seconds": draft.log_retention_ttl_seconds,
    }


def update_request_fields(workflow_id: UUID, changes: WorkflowChanges) -> dict[str, Any]:
    """The semantic fields hashed for update idempotency: the workflow id plus the new values."""
    return {
        "workflow_id": str(workflow_id),
        "name": changes.name,
        "payload": changes.payload,
        "interval": changes.interval,
        "max_consecutive_job_failures_allowed": changes.max_consecutive_job_failures_allowed,
    }


def _name(name: str | None) -> str:
    if name is None or not name.strip():
        raise Invalid("name is required")
    if len(name) > NAME_MAX_LENGTH:
        raise Invalid(f"name must be at most {NAME_MAX_LENGTH} characters")
    return name


def _int_field(value: object, field: str) -> int:
    if value is None:
        raise Invalid(f"{field} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{field} must be an integer")
    return value


def _interval(interval: int | None) -> int:
    value = _int_field(interval, "interval")
    if not INTERVAL_MIN <= value <= INTERVAL_MAX:
        raise Invalid(f"interval must be between {INTERVAL_MIN} and {INTERVAL_MAX} minutes")
    return value


def _max_failures(value: int | None) -> int:
    checked = _int_field(value, "max_consecutive_job_failures_allowed")
    if not MAX_FAILURES_MIN <= checked <= MAX_FAILURES_MAX:
        raise Invalid(
            f"max_consecutive_job_failures_allowed must be between {MAX_FAILURES_MIN} and {MAX_FAILURES_MAX}"
        )
    return checked


def _log_retention(kind: WorkflowKind, value: bool | str | None) -> tuple[bool, int | None]:
    if kind == WorkflowKind.HEARTBEAT:
        if value is None or value is False:
            return False, None
        raise Invalid("log_retention cannot be enabled for HEARTBEAT workflows (they produce no logs)")
    if value is None:
        return True, None
    if isinstance(value, bool):
        return value, None
    if not isinstance(value, str):
        raise Invalid("log_retention must be a boolean or a duration such as 168h")
    try:
        if not value.strip():  # parse_duration("") raises IndexError, not ValueError
            raise ValueError("empty duration")
        ttl = parse_duration(value)
    except ValueError:
        raise Invalid(f"log_retention: {value!r} is neither a boolean nor a duration such as 168h") from None
    if not LOG_RETENTION_TTL_MIN <= ttl <= LOG_RETENTION_TTL_MAX:
        raise Invalid("log_retention duration must be between 1m and 596523h")
    return True, int(ttl.total_seconds())
