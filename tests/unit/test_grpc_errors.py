"""Domain errors (and everything else) become gRPC statuses in one place, with the field named."""

from __future__ import annotations

import grpc
import pytest
from pydantic import ValidationError

from domain.errors import (
    AlreadyExists,
    ChronoverseError,
    Conflict,
    Internal,
    Invalid,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    RateLimited,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from serve_apps.grpc.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY, rpc_error
from serve_apps.schemas.workflows import CreateWorkflowRequest


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Invalid("interval must be between 1 and 10080"), grpc.StatusCode.INVALID_ARGUMENT),
        (Unauthenticated("invalid token"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (NotFound("workflow not found"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("email exists"), grpc.StatusCode.ALREADY_EXISTS),
        (Conflict("idempotency key in flight"), grpc.StatusCode.ABORTED),
        (PreconditionFailed("workflow is active"), grpc.StatusCode.FAILED_PRECONDITION),
        (RateLimited("slow down"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Unavailable("db down"), grpc.StatusCode.UNAVAILABLE),
        (Timeout("too slow"), grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_domain_errors_map_to_the_seed_status_codes(error: ChronoverseError, code: grpc.StatusCode) -> None:
    result = rpc_error(error)
    assert result.code == code
    assert result.details == error.message
    assert (ERROR_CODE_KEY, error.code) in result.trailers


def test_internal_errors_hide_their_message() -> None:
    result = rpc_error(Internal("row 42 violated constraint xyz"))
    assert result.code == grpc.StatusCode.INTERNAL
    assert result.details == "internal error"
    assert result.internal


def test_rate_limited_calls_say_when_to_retry() -> None:
    result = rpc_error(RateLimited("too many attempts", retry_after_s=2.2))
    assert (RETRY_AFTER_KEY, "3") in result.trailers


def test_validation_errors_are_invalid_argument_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        CreateWorkflowRequest.model_validate(
            {"name": "x", "payload": "{}", "kind": "HEARTBEAT", "interval": 0,
             "max_consecutive_job_failures_allowed": 3}
        )
    result = rpc_error(caught.value)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.details.startswith("interval:")
    assert (ERROR_CODE_KEY, "invalid_argument") in result.trailers


def test_a_missing_field_is_named_as_required() -> None:
    with pytest.raises(ValidationError) as caught:
        CreateWorkflowRequest.model_validate({"payload": "{}"})
    assert rpc_error(caught.value).details == "name is required"


def test_errors_raised_in_a_replica_are_unwrapped() -> None:
    class RayTaskError(Exception):  # the shape Ray wraps replica exceptions in
        def __init__(self, cause: BaseException) -> None:
            super().__init__(str(cause))
            self.cause = cause

    result = rpc_error(RayTaskError(NotFound("workflow not found")))
    assert result.code == grpc.StatusCode.NOT_FOUND


def test_timeouts_and_unexpected_errors_are_classified_like_the_gateway_does() -> None:
    assert rpc_error(TimeoutError()).code == grpc.StatusCode.DEADLINE_EXCEEDED
    unexpected = rpc_error(KeyError("secret detail"))
    assert unexpected.code == grpc.StatusCode.INTERNAL
    assert "secret" not in unexpected.details
