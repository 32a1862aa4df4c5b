"""The one place where errors become gRPC statuses (the gRPC twin of :mod:`serve_apps.gateway.errors`).

* :class:`domain.errors.ChronoverseError` subclasses map to the codes of the seed's services
  (reference §2.1): Invalid → INVALID_ARGUMENT, NotFound → NOT_FOUND, AlreadyExists →
  ALREADY_EXISTS, Conflict → ABORTED, PreconditionFailed → FAILED_PRECONDITION, RateLimited →
  RESOURCE_EXHAUSTED, …; the details are the error's message (it names the field).
* A request that does not validate (pydantic) is INVALID_ARGUMENT with the gateway's one-line
  message naming the first bad field.
* Anything else — errors raised in a service replica arrive wrapped by Ray — is classified by the
  gateway's :func:`~serve_apps.gateway.errors.map_exception` (timeouts, Serve back-pressure,
  internal errors with a generic message), so both front doors agree.

Every error also carries the machine code of the HTTP API's error body as the trailing metadata
``error-code`` (and ``retry-after`` in seconds when rate limited).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
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
from serve_apps.gateway.errors import map_exception, unwrap, validation_message

#: Trailing metadata key holding the machine-readable code (``not_found``, ``invalid_argument``, …).
ERROR_CODE_KEY = "error-code"
#: Trailing metadata key holding how many seconds to wait before retrying a rate-limited call.
RETRY_AFTER_KEY = "retry-after"

#: Status code per error class (siblings: order only matters for subclasses added later).
_CODES: tuple[tuple[type[ChronoverseError], grpc.StatusCode], ...] = (
    (Invalid, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Conflict, grpc.StatusCode.ABORTED),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Timeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Internal, grpc.StatusCode.INTERNAL),
)

#: gRPC code of the gateway's HTTP answer to a non-domain exception.
_FROM_HTTP = {
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True, slots=True)
class RpcError:
    """What a failed call answers: the status code, its details and the trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, str], ...]

    @property
    def internal(self) -> bool:
        """Whether this is a server fault (worth a log line with the traceback)."""
        return self.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def code_for(err: ChronoverseError) -> grpc.StatusCode:
    """gRPC status code of a domain error (INTERNAL for an unknown subclass of the base)."""
    for cls, code in _CODES:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.INTERNAL


def rpc_error(exc: BaseException) -> RpcError:
    """The status of any exception escaping an RPC method."""
    exc = unwrap(exc)
    if isinstance(exc, ValidationError):
        return RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            validation_message(exc.errors()),
            ((ERROR_CODE_KEY, Invalid.code),),
        )
    if isinstance(exc, ChronoverseError):
        code = code_for(exc)
        trailers = [(ERROR_CODE_KEY, exc.code)]
        if isinstance(exc, RateLimited):
            trailers.append((RETRY_AFTER_KEY, str(max(1, math.ceil(exc.retry_after_s)))))
        # Internal messages may carry details meant for the log only (as over HTTP).
        details = "internal error" if code is grpc.StatusCode.INTERNAL else exc.message
        return RpcError(code, details, tuple(trailers))
    status, machine_code, message, _headers = map_exception(exc)
    return RpcError(
        _FROM_HTTP.get(status, grpc.StatusCode.INTERNAL), message, ((ERROR_CODE_KEY, machine_code),)
    )
