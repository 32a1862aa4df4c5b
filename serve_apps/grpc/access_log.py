"""One access-log line per gRPC call, on the HTTP gateway's access logger.

The logger, its handler and formatter are the gateway's (:func:`serve_apps.gateway.middleware.
configure_access_log`: one JSON object per line on the process's real stderr, not propagated), so
both front doors write one stream of lines of the same shape::

    {"ts":"…Z","level":"warn","msg":"grpc request","method":"/chronoverse.jobs.v1.JobsService/GetJob",
     "status":"NOT_FOUND","code":5,"duration_ms":3.1,"user_id":"…","request_id":"…",
     "trace_id":"…","span_id":"…"}

``messages`` (how many were sent) is added for server-streaming calls; ``user_id`` is empty until
the caller was authenticated.  Level: ``error`` for server-side failures (the HTTP 5xx family),
``warn`` for the caller's errors, ``info`` for success and for a caller that hung up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import grpc

from serve_apps.gateway.middleware import access_json, configure_access_log

#: Codes that are the server's fault (the HTTP 5xx family).
SERVER_FAULTS = frozenset({
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
})
#: Codes that are not errors at all (CANCELLED: the caller hung up, e.g. left a live stream).
NOT_ERRORS = frozenset({grpc.StatusCode.OK, grpc.StatusCode.CANCELLED})


@dataclass(frozen=True, slots=True)
class GrpcAccess:
    """What one call's line says."""

    method: str
    code: grpc.StatusCode
    duration_s: float
    user_id: UUID | None
    request_id: str
    trace_id: str = ""
    span_id: str = ""
    messages: int | None = None


def access_level(code: grpc.StatusCode) -> int:
    """The logging level of a call that ended with ``code``."""
    if code in NOT_ERRORS:
        return logging.INFO
    return logging.ERROR if code in SERVER_FAULTS else logging.WARNING


def access_line(access: GrpcAccess, *, now: datetime | None = None) -> str:
    """The JSON text of one call's line."""
    fields: dict[str, object] = {
        "method": access.method,
        "status": access.code.name,
        "code": access.code.value[0],
        "duration_ms": round(access.duration_s * 1000, 3),
        "user_id": str(access.user_id) if access.user_id else "",
        "request_id": access.request_id,
        "trace_id": access.trace_id,
        "span_id": access.span_id,
    }
    if access.messages is not None:
        fields["messages"] = access.messages
    return access_json(access_level(access.code), "grpc request", fields, now=now)


class GrpcAccessLog:
    """Writes :func:`access_line` for each call to the gateway's access logger."""

    def __init__(self) -> None:
        self.logger = configure_access_log()

    def write(self, access: GrpcAccess) -> None:
        """Log one finished call."""
        self.logger.log(access_level(access.code), access_line(access))
