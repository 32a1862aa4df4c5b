"""Workflow create/update request validation (reference §2.2; checklist items 9-11)."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest

from domain.enums import WorkflowKind
from domain.errors import Invalid, PreconditionFailed
from domain.idempotency import request_hash
from domain.workflow_spec import (
    check_payload_for,
    create_request_fields,
    parse_kind,
    prepare_create,
    prepare_update,
    update_request_fields,
)

HEARTBEAT = json.dumps({"endpoint": "http://example.test"})
CONTAINER = json.dumps({"image": "local/busybox:1"})
USER = UUID("01900000-0000-7000-8000-000000000001")


def create(**overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "name": "probe",
        "payload": CONTAINER,
        "kind": "CONTAINER",
        "interval": 5,
        "max_consecutive_job_failures_allowed": 3,
    }
    fields.update(overrides)
    return prepare_create(**fields)


@pytest.mark.parametrize("interval", [0, 10081, -1])
def test_interval_outside_one_to_10080_is_invalid(interval: int) -> None:
    with pytest.raises(Invalid, match="interval must be between 1 and 10080"):
        create(interval=interval)


@pytest.mark.parametrize("interval", [1, 10080])
def test_interval_bounds_are_accepted(interval: int) -> None:
    assert create(interval=interval).interval == interval


@pytest.mark.parametrize("value", [2, 101, 0])
def test_max_failures_outside_3_to_100_is_invalid(value: int) -> None:
    with pytest.raises(Invalid, match="max_consecutive_job_failures_allowed must be between 3 and 100"):
        create(max_consecutive_job_failures_allowed=value)


@pytest.mark.parametrize("value", [3, 100])
def test_max_failures_bounds_are_accepted(value: int) -> None:
    assert create(max_consecutive_job_failures_allowed=value).max_consecutive_job_failures_allowed == value


@pytest.mark.parametrize(("field", "message"), [
    ("name", "name is required"),
    ("payload", "payload is required"),
    ("kind", "kind is required"),
    ("interval", "interval is required"),
    ("max_consecutive_job_failures_allowed", "max_consecutive_job_failures_allowed is required"),
])
def test_missing_required_field_is_invalid(field: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        create(**{field: None})


def test_blank_name_is_invalid() -> None:
    with pytest.raises(Invalid, match="name is required"):
        create(name="   ")


def test_name_longer_than_255_is_invalid() -> None:
    assert create(name="n" * 255).name == "n" * 255
    with pytest.raises(Invalid, match="name must be at most 255"):
        create(name="n" * 256)


@pytest.mark.parametrize("value", ["5", 5.0, True])
def test_non_integer_interval_is_invalid(value: object) -> None:
    with pytest.raises(Invalid, match="interval must be an integer"):
        create(interval=value)


def test_unknown_kind_is_invalid() -> None:
    with pytest.raises(Invalid, match="kind must be one of HEARTBEAT, CONTAINER, RAY"):
        parse_kind("CRON")


def test_container_without_log_retention_retains_logs() -> None:
    draft = create()
    assert draft.log_retention is True
    assert draft.log_retention_ttl_seconds is None


def test_container_may_disable_log_retention() -> None:
    assert create(log_retention=False).log_retention is False


def test_heartbeat_without_log_retention_persists_false() -> None:
    draft = create(kind="HEARTBEAT", payload=HEARTBEAT)
    assert draft.log_retention is False
    assert draft.build_hash is None


def test_heartbeat_with_log_retention_false_is_accepted() -> None:
    assert create(kind="HEARTBEAT", payload=HEARTBEAT, log_retention=False).log_retention is False


@pytest.mark.parametrize("value", [True, "24h"])
def test_heartbeat_with_log_retention_enabled_is_invalid(value: object) -> None:
    with pytest.raises(Invalid, match="log_retention cannot be enabled for HEARTBEAT"):
        create(kind="HEARTBEAT", payload=HEARTBEAT, log_retention=value)


def test_log_retention_duration_means_retain_with_a_ttl() -> None:
    draft = create(log_retention="168h")
    assert draft.log_retention is True
    assert draft.log_retention_ttl_seconds == 168 * 3600


@pytest.mark.parametrize("value", ["30s", "soon", "", "-1h"])
def test_bad_log_retention_duration_is_invalid(value: str) -> None:
    with pytest.raises(Invalid, match="log_retention"):
        create(log_retention=value)


def test_payload_is_validated_for_the_kind() -> None:
    with pytest.raises(Invalid, match=r"payload\.image is required"):
        create(payload=HEARTBEAT)
    with pytest.raises(PreconditionFailed):
        create(payload=json.dumps({"image": "x", "timeout": "2h"}))


def test_container_draft_carries_the_build_hash() -> None:
    assert create().build_hash is not None


def test_create_request_hash_ignores_payload_formatting_but_not_values() -> None:
    compact = create(payload='{"image":"local/busybox:1","cmd":["a"]}')
    spaced = create(payload='{ "cmd": ["a"],  "image": "local/busybox:1" }')
    other = create(payload='{"image":"local/busybox:1","cmd":["b"]}')
    digest = request_hash(create_request_fields(USER, compact))
    assert digest == request_hash(create_request_fields(USER, spaced))
    assert digest != request_hash(create_request_fields(USER, other))


def test_create_request_hash_uses_the_resolved_log_retention() -> None:
    implicit = create()
    explicit = create(log_retention=True)
    digest = request_hash(create_request_fields(USER, implicit))
    assert digest == request_hash(create_request_fields(USER, explicit))


def test_update_validates_limits_and_defers_the_payload_to_the_kind() -> None:
    changes = prepare_update(
        name="n", payload=HEARTBEAT, interval=10, max_consecutive_job_failures_allowed=3
    )
    assert check_payload_for(WorkflowKind.HEARTBEAT, changes) is None
    with pytest.raises(Invalid, match=r"payload\.image is required"):
        check_payload_for(WorkflowKind.CONTAINER, changes)
    with pytest.raises(Invalid, match="interval must be between"):
        prepare_update(name="n", payload=HEARTBEAT, interval=0, max_consecutive_job_failures_allowed=3)


def test_update_hash_is_scoped_to_the_workflow() -> None:
    changes = prepare_update(name="n", payload=HEARTBEAT, interval=10, max_consecutive_job_failures_allowed=3)
    one = request_hash(update_request_fields(UUID(int=1), changes))
    two = request_hash(update_request_fields(UUID(int=2), changes))
    assert one != two
