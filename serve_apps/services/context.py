"""What travels with every service call besides its request model: who calls, and the trace.

The gateway authenticates the caller and builds a :class:`CallContext`; a service trusts
``user_id`` (services are reachable only through the gateway and in-cluster handles) and scopes
every read and write by it, so foreign resources look missing (404), never forbidden.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar
from uuid import UUID

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from domain.errors import ChronoverseError, Unauthenticated
from serve_apps.telemetry import extract_context, inject_carrier, tracer


class CallContext(BaseModel):
    """The authenticated caller (``None`` for anonymous calls such as register/login), a request id
    for log correlation and the W3C trace carrier of the calling span."""

    model_config = ConfigDict(frozen=True)

    user_id: UUID | None = None
    request_id: str = ""
    trace: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def current(cls, *, user_id: UUID | None, request_id: str = "") -> CallContext:
        """A context carrying the *current* span as the parent of the service span."""
        return cls(user_id=user_id, request_id=request_id, trace=inject_carrier())

    def require_user(self) -> UUID:
        """The caller's id; a call without one is a programming error surfaced as 401."""
        if self.user_id is None:
            raise Unauthenticated("authentication required")
        return self.user_id


S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")


def service_method(
    func: Callable[Concatenate[S, CallContext, P], Awaitable[R]],
) -> Callable[Concatenate[S, CallContext, P], Awaitable[R]]:
    """Run a service method inside a span ``<Class>.<method>`` (of the plain service class, not the
    Serve shell) parented by ``ctx.trace``.

    Domain errors are recorded on the span with their code; they are expected outcomes, so the
    span status is only set to ERROR for anything else.
    """

    @functools.wraps(func)
    async def wrapper(self: S, ctx: CallContext, *args: P.args, **kwargs: P.kwargs) -> R:
        with tracer().start_as_current_span(
            func.__qualname__,
            context=extract_context(ctx.trace),
            kind=trace.SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await func(self, ctx, *args, **kwargs)
            except ChronoverseError as err:
                span.set_attribute("chronoverse.error_code", err.code)
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                raise

    return wrapper
