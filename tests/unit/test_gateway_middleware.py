"""The gateway's middleware stack on a small app (no services): access log + server span honouring
``traceparent``, CORS, gzip, the body limit and the request deadline."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from domain.config import ServerConfig
from serve_apps.gateway.errors import install_error_handlers
from serve_apps.gateway.middleware import ACCESS_LOGGER, install_middleware
from serve_apps.telemetry import setup_tracing

ORIGIN = "http://dashboard.example:3001"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    setup_tracing("unit-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(json.loads(record.getMessage()))


@pytest.fixture
def access_log() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _app(*, echo_request_id: bool = True, **server: object) -> TestClient:
    config = ServerConfig(allowed_origins=f"{ORIGIN},", request_body_limit=1024, **server)  # type: ignore[arg-type]
    app = FastAPI()
    install_error_handlers(app)
    install_middleware(app, config, echo_request_id=echo_request_id)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, object]:
        ids = trace.get_current_span().get_span_context()
        return {"id": item_id, "trace_id": f"{ids.trace_id:032x}", "filler": "x" * 2000}

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(1.0)
        return {"done": True}

    @app.get("/jobs/{job_id}/events")
    async def events(job_id: str) -> StreamingResponse:
        async def frames() -> AsyncIterator[bytes]:
            await asyncio.sleep(0.3)
            yield b"event: end\ndata: " + b"x" * 2000 + b"\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("bug with a secret inside")

    return TestClient(app, raise_server_exceptions=False)


def test_access_log_is_one_json_line_with_route_status_and_trace(
    access_log: _Lines, spans: InMemorySpanExporter
) -> None:
    client = _app()
    response = client.get("/items/7", headers={"traceparent": TRACEPARENT, "User-Agent": "unit"})
    assert response.status_code == 200
    assert len(access_log.records) == 1
    line = access_log.records[0]
    assert line["method"] == "GET" and line["path"] == "/items/7" and line["route"] == "/items/{item_id}"
    assert line["status"] == 200 and line["level"] == "info" and line["user_agent"] == "unit"
    assert line["trace_id"] == TRACE_ID  # the incoming W3C context was honoured
    assert response.json()["trace_id"] == TRACE_ID  # and is current inside the handler
    assert response.headers["X-Request-ID"] == line["request_id"]
    span = next(s for s in spans.get_finished_spans() if s.name == "GET /items/{item_id}")
    assert span.kind == trace.SpanKind.SERVER
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 200


def test_the_request_id_is_echoed_once_and_left_to_serve_under_serve(access_log: _Lines) -> None:
    own = _app().get("/items/1", headers={"X-Request-ID": "req-1"})
    assert own.headers.get_list("X-Request-ID") == ["req-1"]
    under_serve = _app(echo_request_id=False).get("/items/1", headers={"X-Request-ID": "req-2"})
    assert "X-Request-ID" not in under_serve.headers  # Serve's RequestIdMiddleware adds it
    assert [r["request_id"] for r in access_log.records] == ["req-1", "req-2"]


def test_without_traceparent_each_request_starts_a_new_trace(access_log: _Lines) -> None:
    client = _app()
    client.get("/items/1")
    client.get("/items/2")
    first, second = (r["trace_id"] for r in access_log.records)
    assert first and second and first != second


def test_unhandled_errors_are_json_500_without_details(access_log: _Lines) -> None:
    response = _app().get("/crash")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error"}}
    assert access_log.records[-1]["status"] == 500 and access_log.records[-1]["level"] == "error"


def test_cors_preflight_from_allowed_origin_is_204() -> None:
    response = _app().options("/echo", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-CSRF-Token" in response.headers["Access-Control-Allow-Headers"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert response.headers["Access-Control-Max-Age"] == "86400"


def test_cors_ignores_other_origins() -> None:
    client = _app()
    assert (
        "Access-Control-Allow-Origin" not in client.get("/items/1", headers={"Origin": "http://evil"}).headers
    )
    allowed = client.get("/items/1", headers={"Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Vary"] == "Origin, Accept-Encoding" or "Origin" in allowed.headers["Vary"]


def test_bodies_within_the_limit_reach_the_handler() -> None:
    assert _app().post("/echo", content=b"x" * 1024).json() == {"size": 1024}


def test_declared_oversized_bodies_are_rejected() -> None:
    response = _app().post("/echo", content=b"x" * 1025)
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "invalid_argument", "message": "invalid request body"}}


def test_streamed_oversized_bodies_are_rejected() -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"x" * 300

    response = _app().post("/echo", content=chunks())  # chunked: no Content-Length
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "invalid request body"


def test_responses_are_gzipped_except_streams() -> None:
    client = _app()
    assert client.get("/items/1", headers={"Accept-Encoding": "gzip"}).headers["Content-Encoding"] == "gzip"
    stream = client.get("/jobs/1/events", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in stream.headers
    assert stream.text.startswith("event: end")


def test_slow_requests_hit_the_deadline_but_streams_do_not() -> None:
    client = _app(request_timeout=timedelta(milliseconds=100))
    slow = client.get("/slow")
    assert slow.status_code == 504
    assert slow.json()["error"]["code"] == "deadline_exceeded"
    assert client.get("/jobs/1/events").status_code == 200  # takes 300 ms, exempt
