"""The one hop carries the caller and the trace: a service method's span is a child of the span that
was current when the gateway built the :class:`CallContext`, and domain errors are tagged, not failed."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from domain.errors import NotFound, Unauthenticated
from domain.ids import uuid7
from serve_apps.services.context import CallContext, service_method
from serve_apps.telemetry import setup_tracing, tracer


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    setup_tracing("unit-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


class Echo:
    @service_method
    async def whoami(self, ctx: CallContext) -> str:
        return str(ctx.require_user())

    @service_method
    async def missing(self, ctx: CallContext) -> None:
        raise NotFound("nothing here")


async def test_service_span_is_a_child_of_the_calling_span(spans: InMemorySpanExporter) -> None:
    user = uuid7()
    with tracer().start_as_current_span("GET /workflows/{workflow_id}") as parent:
        ctx = CallContext.current(user_id=user, request_id="r-1")
    # The call may run anywhere (another process): only the carrier links the two spans.
    assert await Echo().whoami(ctx) == str(user)
    child = next(s for s in spans.get_finished_spans() if s.name == "Echo.whoami")
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id
    assert child.context.trace_id == parent.get_span_context().trace_id


async def test_domain_errors_are_tagged_on_the_span_and_re_raised(spans: InMemorySpanExporter) -> None:
    with pytest.raises(NotFound):
        await Echo().missing(CallContext(user_id=uuid7()))
    span = next(s for s in spans.get_finished_spans() if s.name == "Echo.missing")
    assert span.attributes is not None and span.attributes["chronoverse.error_code"] == "not_found"
    assert span.status.status_code != trace.StatusCode.ERROR


async def test_a_call_without_a_user_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated):
        await Echo().whoami(CallContext())


def test_call_context_survives_pickling_for_the_handle_hop() -> None:
    import pickle

    ctx = CallContext(
        user_id=uuid7(), request_id="r", trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    )
    assert pickle.loads(pickle.dumps(ctx)) == ctx
