"""The gRPC access-log line: its level per status code and its JSON shape."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from uuid import UUID

import grpc
import pytest

from serve_apps.grpc.access_log import GrpcAccess, access_level, access_line

USER = UUID("01a229e2-6e29-7147-9813-ed899294c2ae")


@pytest.mark.parametrize(("code", "level"), [
    (grpc.StatusCode.OK, logging.INFO),
    (grpc.StatusCode.CANCELLED, logging.INFO),  # the caller hung up (left a live stream)
    (grpc.StatusCode.NOT_FOUND, logging.WARNING),
    (grpc.StatusCode.INVALID_ARGUMENT, logging.WARNING),
    (grpc.StatusCode.UNAUTHENTICATED, logging.WARNING),
    (grpc.StatusCode.INTERNAL, logging.ERROR),
    (grpc.StatusCode.UNAVAILABLE, logging.ERROR),
    (grpc.StatusCode.DEADLINE_EXCEEDED, logging.ERROR),
])
def test_the_level_follows_whose_fault_the_status_is(code: grpc.StatusCode, level: int) -> None:
    assert access_level(code) == level


def test_a_line_is_one_json_object_with_the_call_its_outcome_and_the_caller() -> None:
    access = GrpcAccess(method="/chronoverse.jobs.v1.JobsService/GetJob", code=grpc.StatusCode.NOT_FOUND,
                        duration_s=0.0031, user_id=USER, request_id="req-1", trace_id="t", span_id="s")
    line = access_line(access, now=datetime(2026, 11, 30, 1, 2, 3, 456000, tzinfo=UTC))
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2026-11-30T01:02:03.456Z", "level": "warn", "msg": "grpc request",
        "method": "/chronoverse.jobs.v1.JobsService/GetJob", "status": "NOT_FOUND", "code": 5,
        "duration_ms": 3.1, "user_id": str(USER), "request_id": "req-1", "trace_id": "t", "span_id": "s",
    }


def test_a_stream_counts_its_messages_and_an_anonymous_call_has_no_user() -> None:
    access = GrpcAccess(method="/chronoverse.jobs.v1.JobsService/StreamJobLogs", code=grpc.StatusCode.OK,
                        duration_s=1.5, user_id=None, request_id="req-2", messages=42)
    record = json.loads(access_line(access))
    assert (record["messages"], record["user_id"], record["level"]) == (42, "", "info")
