"""Cross-cutting HTTP behaviour of the gateway, as plain ASGI middleware (reference §2.1).

Order, outer → inner (see :func:`install_middleware`):

1. :class:`AccessLogMiddleware` — request id, an OpenTelemetry server span honouring an incoming W3C
   ``traceparent``, one structured JSON access-log line per request, and a JSON 500 for anything
   that escaped every handler.
2. :class:`CorsMiddleware` — credentialed CORS for ``SERVER_ALLOWED_ORIGINS`` only; preflight → 204.
3. :class:`StreamAwareGZipMiddleware` — gzip (fastest level) except on SSE and raw log downloads.
4. :class:`BodyLimitMiddleware` — bodies of POST/PUT/PATCH read up front, bounded by
   ``SERVER_REQUEST_BODY_LIMIT`` (→ 400 ``invalid request body``) and ``SERVER_READ_TIMEOUT`` (→ 408).
5. :class:`DeadlineMiddleware` — ``SERVER_REQUEST_TIMEOUT`` per request (→ 504), streams excepted.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request on the hot path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.config import ServerConfig
from serve_apps.gateway.errors import INVALID_BODY_MESSAGE, error_body, map_exception, unwrap
from serve_apps.telemetry import current_ids, extract_context, tracer

ACCESS_LOGGER = "chronoverse.access"
REQUEST_ID_HEADER = "X-Request-ID"
#: Path suffixes of long-lived or raw responses: no gzip, no deadline, no span (reference §2.1).
STREAMING_SUFFIXES = ("/events", "/logs/raw")

CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_ALLOW_HEADERS = "Content-Type, Idempotency-Key, X-CSRF-Token, Authorization"
CORS_EXPOSE_HEADERS = "X-CSRF-Token, Retry-After, X-Request-ID"
CORS_MAX_AGE = "86400"

log = logging.getLogger("chronoverse.gateway")


def is_streaming_path(path: str) -> bool:
    """Whether ``path`` serves an SSE stream or a raw download."""
    return path.rstrip("/").endswith(STREAMING_SUFFIXES)


def configure_access_log() -> logging.Logger:
    """The access logger: one JSON object per line on stderr (the replica's log), never propagated
    to Ray's own formatter so the line stays machine-readable.

    The process's real stderr (``sys.__stderr__``; Ray points it at the worker's ``.err`` file), not
    ``sys.stderr``: in a Serve replica that is Serve's print-capturing stream, which walks the whole
    call stack for every line written (a tenth of the gateway's CPU on a cache-hit read)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(getattr(h, "_chronoverse_access", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._chronoverse_access = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


_LEVEL_NAMES = {logging.ERROR: "error", logging.WARNING: "warn", logging.INFO: "info"}


def access_json(level: int, msg: str, fields: dict[str, Any], *, now: datetime | None = None) -> str:
    """One access-log line (HTTP and gRPC alike): ``ts``, ``level``, ``msg``, then ``fields``, as
    compact JSON."""
    record: dict[str, Any] = {
        "ts": (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": _LEVEL_NAMES[level],
        "msg": msg,
        **fields,
    }
    return json.dumps(record, separators=(",", ":"))


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[str, str]] = ()
) -> None:
    """Send a complete JSON response from middleware (outside FastAPI's response classes)."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class AccessLogMiddleware:
    """Request id, server span and one structured access-log line per request."""

    def __init__(self, app: ASGIApp, *, echo_request_id: bool = True) -> None:
        self.app = app
        self.logger = configure_access_log()
        # Serve wraps every ingress in its own RequestIdMiddleware, which already answers with the
        # request's X-Request-ID (the one read here): echoing it again would send it twice.
        self.echo_request_id = echo_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        request_id = headers.get(REQUEST_ID_HEADER) or secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        method: str = scope["method"]
        status = 0
        sent_bytes = 0
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent_bytes, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                if self.echo_request_id:
                    MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        parent = extract_context({k: v for k, v in headers.items() if k in ("traceparent", "tracestate")})
        traced = not is_streaming_path(path)
        span_cm = (
            tracer().start_as_current_span(
                method,
                context=parent,
                kind=trace.SpanKind.SERVER,
                record_exception=False,
                set_status_on_exception=False,
            )
            if traced
            else trace.use_span(trace.INVALID_SPAN, end_on_exit=False)
        )
        with span_cm as span:
            trace_id, span_id = current_ids()
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception as exc:
                code, err_code, message, extra = map_exception(exc)
                log.error("unhandled error in %s %s", method, path, exc_info=unwrap(exc))
                if not response_started:
                    await send_json(send_wrapper, code, error_body(err_code, message), extra.items())
                else:
                    status = status or 500
            route = scope.get("route")
            template = getattr(route, "path", None) or path
            if traced:
                span.update_name(f"{method} {template}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", template)
                span.set_attribute("url.path", path)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
        duration_ms = (time.perf_counter() - started) * 1000
        client = scope.get("client")
        level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        self.logger.log(level, access_json(level, "http request", {
            "method": method,
            "path": path,
            "route": template,
            "status": status,
            "duration_ms": round(duration_ms, 3),
            "bytes": sent_bytes,
            "remote_addr": client[0] if client else "",
            "user_agent": headers.get("user-agent", ""),
            "request_id": request_id,
            "trace_id": trace_id,
            "span_id": span_id,
        }))


class CorsMiddleware:
    """Credentialed CORS for an explicit origin list (reference §2.1); other origins get no headers."""

    def __init__(self, app: ASGIApp, *, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)

    def _headers(self, origin: str) -> list[tuple[str, str]]:
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS),
            ("Vary", "Origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if not origin or origin not in self.origins:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            preflight = [
                *self._headers(origin),
                ("Access-Control-Allow-Methods", CORS_METHODS),
                ("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS),
                ("Access-Control-Max-Age", CORS_MAX_AGE),
            ]
            raw = [(k.lower().encode(), v.encode()) for k, v in preflight]
            await send({"type": "http.response.start", "status": 204, "headers": raw})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                mutable = MutableHeaders(scope=message)
                for key, value in self._headers(origin):
                    if key == "Vary":
                        mutable.add_vary_header("Origin")
                    else:
                        mutable[key] = value
            await send(message)

        await self.app(scope, receive, send_wrapper)


class StreamAwareGZipMiddleware:
    """Starlette's gzip at the fastest level (the seed's BestSpeed), bypassed for streams."""

    def __init__(self, app: ASGIApp, *, minimum_size: int = 500) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_streaming_path(scope["path"]):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Read POST/PUT/PATCH bodies up front, at most ``limit`` bytes within ``read_timeout`` seconds."""

    METHODS = frozenset({"POST", "PUT", "PATCH"})

    def __init__(self, app: ASGIApp, *, limit: int, read_timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.METHODS:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await send_json(send, 400, error_body("invalid_argument", INVALID_BODY_MESSAGE))
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limit:
                        await send_json(send, 400, error_body("invalid_argument", INVALID_BODY_MESSAGE))
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await send_json(send, 408, error_body("request_timeout", "timed out reading the request body"))
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class DeadlineMiddleware:
    """Bound each non-streaming request by ``SERVER_REQUEST_TIMEOUT``; the pending service call is
    cancelled (Serve cancels it on the replica too) and the client gets 504."""

    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout <= 0 or is_streaming_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(self.timeout):
                await self.app(scope, receive, send_wrapper)
        except TimeoutError:
            if started:
                raise
            await send_json(send, 504, error_body("deadline_exceeded", "the request timed out"))


def install_middleware(app: FastAPI, server: ServerConfig, *, echo_request_id: bool = True) -> None:
    """Add the middleware stack in the order documented above (Starlette: last added = outermost)."""
    app.add_middleware(DeadlineMiddleware, timeout=server.request_timeout.total_seconds())
    app.add_middleware(
        BodyLimitMiddleware, limit=server.request_body_limit, read_timeout=server.read_timeout.total_seconds()
    )
    app.add_middleware(StreamAwareGZipMiddleware)
    app.add_middleware(CorsMiddleware, origins=server.origins)
    app.add_middleware(AccessLogMiddleware, echo_request_id=echo_request_id)
