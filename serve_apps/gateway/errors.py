"""The one place where errors become HTTP responses (ADR 0001, SPEC §5.1).

* :class:`domain.errors.ChronoverseError` subclasses map to the reference's status codes.
* Request validation (body, query, path, headers) is 400 — never FastAPI's default 422 — with a
  message naming the field; an undecodable body is ``invalid request body`` (reference §2.1).
* Errors raised inside a service replica arrive wrapped by Ray; the original is unwrapped.
* Ray Serve's own failures (back-pressure, replica gone) are 503; timeouts 504; anything else 500
  with a generic message (the details go to the log, never to the client).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
from serve_apps.schemas.errors import ErrorDetail, ErrorResponse

log = logging.getLogger("chronoverse.gateway")

INVALID_BODY_MESSAGE = "invalid request body"

#: Status code per error class.  The classes are siblings, so order only matters for subclasses
#: a caller might add later (most specific first).
_STATUS: tuple[tuple[type[ChronoverseError], int], ...] = (
    (Invalid, 400),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (AlreadyExists, 409),
    (Conflict, 409),
    (PreconditionFailed, 412),
    (RateLimited, 429),
    (Unavailable, 503),
    (Timeout, 504),
    (Internal, 500),
)

#: Codes for HTTP errors raised by routing itself (unknown path, wrong method, …).
_HTTP_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    412: "failed_precondition",
    413: "invalid_argument",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
    504: "deadline_exceeded",
}


def status_for(err: ChronoverseError) -> int:
    """HTTP status of a domain error (500 for an unknown subclass of the base)."""
    for cls, status in _STATUS:
        if isinstance(err, cls):
            return status
    return 500


def unwrap(exc: BaseException) -> BaseException:
    """The user exception inside a Ray task error (errors raised in a service replica)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and type(exc).__module__.startswith("ray"):
        return cause
    for klass in type(exc).__mro__:
        # Dual classes made by RayTaskError.as_instanceof_cause() carry the cause too.
        if klass.__name__.startswith("RayTaskError") and isinstance(cause, BaseException):
            return cause
    return exc


def _is_serve_unavailable(exc: BaseException) -> bool:
    # Imported lazily: the gateway's unit tests run without importing Ray.
    try:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
    except ImportError:  # pragma: no cover - Ray is a hard dependency
        return False
    return isinstance(
        exc,
        BackPressureError
        | DeploymentUnavailableError
        | RayActorError
        | ActorDiedError
        | ActorUnavailableError,
    )


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of an error response."""
    return ErrorResponse(error=ErrorDetail(code=code, message=message)).model_dump()


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A complete error response."""
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def map_exception(exc: BaseException) -> tuple[int, str, str, dict[str, str]]:
    """``(status, code, message, headers)`` for any exception escaping a handler."""
    exc = unwrap(exc)
    if isinstance(exc, ChronoverseError):
        headers: dict[str, str] = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        status = status_for(exc)
        message = exc.message if status != 500 else "internal error"
        return status, exc.code, message, headers
    if isinstance(exc, TimeoutError):
        return 504, Timeout.code, "the request timed out", {}
    if _is_serve_unavailable(exc):
        return 503, Unavailable.code, "service temporarily unavailable, retry later", {"Retry-After": "1"}
    return 500, Internal.code, "internal error", {}


def _field_name(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts)


def validation_message(errors: Sequence[Any]) -> str:
    """One line describing the first validation error, naming its field."""
    if not errors:
        return INVALID_BODY_MESSAGE
    first = errors[0]
    kind = first.get("type", "")
    loc = first.get("loc", ())
    field = _field_name(loc)
    if kind == "json_invalid" or (loc and loc[0] == "body" and not field):
        return INVALID_BODY_MESSAGE
    if kind == "missing":
        return f"{field} is required"
    msg = str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    return f"{field}: {msg}" if field else msg


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    status, code, message, headers = map_exception(exc)
    if status >= 500:
        log.error("request failed: %s %s", request.method, request.url.path, exc_info=unwrap(exc))
    return error_response(status, code, message, headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, Invalid.code, validation_message(exc.errors()))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "invalid_argument")
    if exc.status_code == 400:
        # FastAPI raises a bare 400 when the body cannot be read or parsed at all.
        message = INVALID_BODY_MESSAGE
    elif exc.status_code == 404:
        message = "route not found"
    elif exc.status_code == 405:
        message = "method not allowed"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on a FastAPI app.

    Handlers are registered per class rather than for ``Exception``: Starlette runs an
    ``Exception`` handler outside every middleware, so the access log would miss the status.
    Anything unexpected is turned into a 500 by :class:`serve_apps.gateway.middleware.AccessLogMiddleware`.
    """
    from ray.exceptions import RayError
    from ray.serve.exceptions import RayServeException

    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for cls in (ChronoverseError, TimeoutError, RayError, RayServeException):
        app.add_exception_handler(cls, _on_domain_error)


#: The error responses every route may produce, for OpenAPI.
COMMON_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request (the message names the field)"},
    500: {"model": ErrorResponse, "description": "Internal error"},
    503: {"model": ErrorResponse, "description": "A dependency is unavailable"},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given statuses plus the common ones."""
    descriptions = {
        401: "Not authenticated (no or expired session, unknown or revoked token)",
        403: "CSRF token missing or wrong",
        404: "Not found (or owned by someone else)",
        409: "Conflict (duplicate, or idempotency key reused/in flight)",
        412: "Precondition failed",
        429: "Too many attempts; see Retry-After",
    }
    out = dict(COMMON_ERROR_RESPONSES)
    for status in statuses:
        out[status] = {"model": ErrorResponse, "description": descriptions.get(status, "Error")}
    return out
