"""OpenTelemetry wiring for the gateway and the domain services (SPEC §7).

Each replica installs an SDK tracer provider once, so spans carry real trace ids (the access log
prints them) even when no exporter is configured.  ``OTEL_TRACES_EXPORTER=console`` prints spans;
any other exporter is the deployment's business (set it up before the first span).

Context crosses the one handle hop as a W3C ``traceparent`` carrier inside
:class:`serve_apps.services.context.CallContext`, so the service span is a child of the HTTP span.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

_lock = threading.Lock()
_installed = False

TRACER_NAME = "chronoverse.serve"


def setup_tracing(service_name: str) -> None:
    """Install an SDK tracer provider for this process (idempotent; first caller names it)."""
    global _installed
    with _lock:
        if _installed:
            return
        current = trace.get_tracer_provider()
        # Another component (or a test) may already have installed an SDK provider: keep it.
        if not isinstance(current, TracerProvider):
            provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
                provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            trace.set_tracer_provider(provider)
        _installed = True


@functools.cache
def tracer() -> trace.Tracer:
    """The tracer every span of this package is made with (a proxy until a provider is set, so
    caching it is safe; looking it up per span costs an import-system probe each time)."""
    return trace.get_tracer(TRACER_NAME)


def inject_carrier() -> dict[str, str]:
    """The current context as W3C headers (``traceparent``/``tracestate``) for a handle call."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, str]) -> Context:
    """The parent context described by W3C headers (empty → a new root)."""
    return propagate.extract(dict(carrier))


def current_ids() -> tuple[str, str]:
    """``(trace_id, span_id)`` of the current span as hex, or empty strings when there is none."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
