"""The gateway's one error mapping: domain errors → status codes and ``{"error": {code, message}}``
bodies, errors raised in service replicas (wrapped by Ray), validation → 400 naming the field."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel, StrictInt
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError

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
from serve_apps.gateway.errors import install_error_handlers, map_exception, validation_message


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Invalid("interval must be between 1 and 10080 minutes"), 400),
        (Unauthenticated("session not found"), 401),
        (PermissionDenied("invalid or expired CSRF token"), 403),
        (NotFound("workflow not found"), 404),
        (AlreadyExists("a user with this email already exists"), 409),
        (Conflict("a request with this idempotency key is still being processed"), 409),
        (PreconditionFailed("workflow is active, cannot delete"), 412),
        (RateLimited("too many login attempts"), 429),
        (Unavailable("database down"), 503),
        (Timeout("deadline exceeded"), 504),
    ],
)
def test_domain_errors_map_to_reference_status_codes_with_their_message(
    error: ChronoverseError, status: int
) -> None:
    mapped_status, code, message, _ = map_exception(error)
    assert (mapped_status, code, message) == (status, error.code, error.message)


def test_internal_errors_hide_their_message() -> None:
    status, code, message, _ = map_exception(Internal("pool exhausted at 10.0.0.3"))
    assert (status, code, message) == (500, "internal", "internal error")


def test_unexpected_exceptions_are_500_without_details() -> None:
    status, code, message, headers = map_exception(KeyError("secret"))
    assert (status, code, message, headers) == (500, "internal", "internal error", {})


def test_rate_limited_carries_retry_after_rounded_up() -> None:
    _, _, _, headers = map_exception(RateLimited("slow down", retry_after_s=12.2))
    assert headers == {"Retry-After": "13"}


def test_custom_error_codes_survive() -> None:
    _, code, _, _ = map_exception(Invalid("password is incorrect", code="invalid_credentials"))
    assert code == "invalid_credentials"


def test_errors_raised_in_a_service_replica_are_unwrapped() -> None:
    wrapped = RayTaskError("WorkflowsService.get_workflow", "Traceback ...", NotFound("gone", code="custom"))
    dual = wrapped.as_instanceof_cause()
    for exc in (wrapped, dual):
        assert map_exception(exc)[:3] == (404, "custom", "gone")


def test_serve_back_pressure_is_503_with_retry_after() -> None:
    status, code, _, headers = map_exception(
        BackPressureError(num_queued_requests=10, max_queued_requests=10)
    )
    assert (status, code) == (503, "unavailable")
    assert headers["Retry-After"] == "1"


def test_timeouts_are_504() -> None:
    assert map_exception(TimeoutError())[:2] == (504, "deadline_exceeded")


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        ([{"type": "missing", "loc": ("body", "name"), "msg": "Field required"}], "name is required"),
        ([{"type": "json_invalid", "loc": ("body", 12), "msg": "JSON decode error"}], "invalid request body"),
        ([{"type": "missing", "loc": ("body",), "msg": "Field required"}], "invalid request body"),
        (
            [{"type": "int_type", "loc": ("body", "interval"), "msg": "Input should be a valid integer"}],
            "interval: input should be a valid integer",
        ),
        (
            [{"type": "uuid_parsing", "loc": ("path", "workflow_id"), "msg": "Input should be a valid UUID"}],
            "workflow_id: input should be a valid UUID",
        ),
        ([], "invalid request body"),
    ],
)
def test_validation_messages_name_the_field(errors: list[dict[str, object]], message: str) -> None:
    assert validation_message(errors) == message


class _Body(BaseModel):
    interval: StrictInt


def _app() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/things")
    async def create(body: _Body, limit: Annotated[int, Query()] = 1) -> dict[str, int]:
        return {"interval": body.interval}

    @app.get("/boom/{kind}")
    async def boom(kind: str) -> None:
        raise {"missing": NotFound("thing not found"), "late": PreconditionFailed("too late")}[kind]

    return TestClient(app, raise_server_exceptions=False)


def test_request_validation_is_400_not_422() -> None:
    client = _app()
    response = client.post("/things", json={"interval": "5"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid_argument", "message": "interval: input should be a valid integer"}
    }
    query = client.post("/things?limit=x", json={"interval": 5})
    assert query.status_code == 400 and query.json()["error"]["message"].startswith("limit:")


def test_undecodable_body_is_invalid_request_body() -> None:
    response = _app().post("/things", content=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "invalid request body"


def test_domain_errors_from_handlers_become_json_bodies() -> None:
    client = _app()
    assert client.get("/boom/missing").json() == {
        "error": {"code": "not_found", "message": "thing not found"}
    }
    assert client.get("/boom/late").status_code == 412


def test_routing_errors_are_json_too() -> None:
    client = _app()
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = client.delete("/things")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
