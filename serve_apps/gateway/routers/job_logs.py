"""``/workflows/{workflow_id}/jobs/{job_id}/…`` log routes (reference §2.2-2.4, SPEC §5.6).

* ``GET …/logs`` — newest first, 100 per page, cursor; 412 when the workflow keeps no logs.
* ``GET …/logs/search?q=&stream=`` — ClickHouse text search with a per-response highlight token.
* ``GET …/logs/raw?format=txt|json|jsonl`` — a streamed attachment, oldest first: one
  ``JobsService.download_page`` hop per page of 1000 lines (the first before the response starts,
  so 400/404/412 are real statuses; a later failure is appended to the file, reference §2.4).
* ``GET …/events`` — SSE: one hop for the preconditions, then the gateway follows the job's Redis
  channel itself (no hop per line) through the replica's :class:`~serve_apps.live_logs.LiveLogHub`
  (one pub/sub connection for all viewers), polling the job's status as a safety net so every
  stream ends; this module only formats :func:`~serve_apps.live_logs.follow_job_logs`' events.

The middleware treats ``/events`` and ``/logs/raw`` as streams (no gzip, no request deadline, no
span).  The wire formats are built by :mod:`serve_apps.schemas.job_logs`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from domain.enums import LogDownloadFormat, LogStream
from serve_apps.gateway.dependencies import Caller, GatewayState, State
from serve_apps.gateway.errors import error_responses, map_exception
from serve_apps.live_logs import (
    LiveConnected,
    LiveEnd,
    LiveError,
    LiveKeepalive,
    LiveLine,
    LiveLogHub,
    follow_job_logs,
)
from serve_apps.schemas.job_logs import (
    RAW_CONTENT_TYPES,
    SSE_CONTENT_TYPE,
    SSE_KEEPALIVE,
    JobLogsPage,
    JobLogsSearchPage,
    LogDownloadQuery,
    LogSearchQuery,
    LogsQuery,
    RawLogEncoder,
    attachment_disposition,
    connected_frame,
    end_frame,
    error_frame,
    log_frame,
)
from serve_apps.schemas.jobs import JobRef
from serve_apps.services.context import CallContext

log = logging.getLogger("chronoverse.gateway.logs")

router = APIRouter(prefix="/workflows/{workflow_id}/jobs/{job_id}", tags=["job logs"])

#: A middle page (asked for with a cursor, followed by another) never changes: older lines are
#: final.  ``private`` because logs are per-user (the seed said ``public``).
STABLE_PAGE_CACHE_CONTROL = "private, max-age=7200"

CursorParam = Annotated[str | None, Query(description="From the previous page.")]
StreamParam = Annotated[
    LogStream | Literal[""] | None, Query(description="Only this stream (omitted or empty: both).")
]
QueryParam = Annotated[str, Query(description="Case-insensitive text to find.", max_length=1024)]


async def get_hub(request: Request) -> LiveLogHub:
    """The replica's live-log hub (made by :func:`serve_apps.gateway.app.create_gateway_app`)."""
    hub: LiveLogHub = request.app.state.live_logs
    return hub


Hub = Annotated[LiveLogHub, Depends(get_hub)]


def page_cache_control(request_cursor: str | None, next_cursor: str | None) -> str:
    """Reference §2.2: cacheable only for a cursor page that has a next page."""
    return STABLE_PAGE_CACHE_CONTROL if request_cursor and next_cursor else "no-store"


def _reason(exc: BaseException) -> str:
    """The client-facing text of an error that happened after the response started."""
    status, _code, message, _headers = map_exception(exc)
    if status >= 500:
        log.error("log stream failed", exc_info=exc)
    return message


@router.get(
    "/logs",
    response_model=JobLogsPage,
    responses=error_responses(401, 404, 412),
    summary="Read a job's logs",
)
async def list_logs(
    workflow_id: UUID, job_id: UUID, ctx: Caller, state: State, response: Response, cursor: CursorParam = None
) -> JobLogsPage:
    """Up to 100 lines, newest first; ``cursor`` gives the next-older page (no gap, no overlap).
    412 when the workflow keeps no logs (every HEARTBEAT workflow)."""
    page = await state.services.jobs.list_logs(
        ctx, LogsQuery(workflow_id=workflow_id, job_id=job_id, cursor=cursor)
    )
    response.headers["Cache-Control"] = page_cache_control(cursor, page.cursor)
    return page


@router.get(
    "/logs/search",
    response_model=JobLogsSearchPage,
    responses=error_responses(401, 404, 412),
    summary="Search a job's logs",
)
async def search_logs(
    workflow_id: UUID,
    job_id: UUID,
    ctx: Caller,
    state: State,
    response: Response,
    q: QueryParam = "",
    stream: StreamParam = None,
    cursor: CursorParam = None,
) -> JobLogsSearchPage:
    """Lines containing ``q``, newest first, matches wrapped in markers made of the response's
    ``highlight_token``; without ``q`` the plain pages, filtered by ``stream``."""
    page = await state.services.jobs.search_logs(
        ctx,
        LogSearchQuery(workflow_id=workflow_id, job_id=job_id, q=q, stream=stream or None, cursor=cursor),
    )
    response.headers["Cache-Control"] = page_cache_control(cursor, page.cursor)
    return page


_RAW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file, streamed oldest first (an error after the start is appended to it)",
        "content": {media: {"schema": {"type": "string"}} for media in RAW_CONTENT_TYPES.values()},
    },
    **error_responses(401, 404, 412),
}


@router.get(
    "/logs/raw",
    response_class=StreamingResponse,
    responses=_RAW_RESPONSES,
    summary="Download a finished job's logs",
)
async def download_logs(
    workflow_id: UUID,
    job_id: UUID,
    ctx: Caller,
    state: State,
    file_format: Annotated[
        LogDownloadFormat | Literal[""], Query(alias="format", description="txt (default), json or jsonl.")
    ] = LogDownloadFormat.TXT,
    stream: StreamParam = None,
    q: QueryParam = "",
) -> StreamingResponse:
    """The whole log of a COMPLETED, FAILED or CANCELED job as an attachment
    ``<job>-logs.<format>``; 400 ``job is not yet completed`` otherwise, 412 without retention."""
    fmt = file_format or LogDownloadFormat.TXT
    query = LogDownloadQuery(workflow_id=workflow_id, job_id=job_id, q=q, stream=stream or None)
    first = await state.services.jobs.download_page(ctx, query)
    encoder = RawLogEncoder.for_query(fmt, query)
    return StreamingResponse(
        _download(state, ctx, query, first, encoder),
        media_type=RAW_CONTENT_TYPES[fmt],
        headers={"Content-Disposition": attachment_disposition(job_id, fmt), "Cache-Control": "no-store"},
    )


async def _download(
    state: GatewayState, ctx: CallContext, query: LogDownloadQuery, first: JobLogsPage, encoder: RawLogEncoder
) -> AsyncIterator[str]:
    yield encoder.start()
    page = first
    while True:
        yield encoder.page(page.logs)
        if page.cursor is None:
            break
        try:
            page = await state.services.jobs.download_page(
                ctx, query.model_copy(update={"cursor": page.cursor})
            )
        except Exception as exc:  # the status line is gone: report in the file (reference §2.4)
            yield encoder.failure(_reason(exc))
            return
    yield encoder.finish()


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `connected`, then `log` per new line, then `end` "
            "when the job finished; `error` (plain text) when the stream cannot be served",
            "content": {SSE_CONTENT_TYPE: {"schema": {"type": "string"}}},
        },
        **error_responses(401),
    },
    summary="Follow a running job's logs live",
)
async def live_logs(
    workflow_id: UUID, job_id: UUID, ctx: Caller, state: State, hub: Hub
) -> StreamingResponse:
    """Lines published after connecting, for a RUNNING job of a workflow that keeps logs.  Errors
    (not running, no retention, not found) arrive as an ``error`` frame with status 200."""
    return StreamingResponse(
        _live_frames(hub, state, ctx, JobRef(workflow_id=workflow_id, job_id=job_id)),
        media_type=SSE_CONTENT_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _live_frames(
    hub: LiveLogHub, state: GatewayState, ctx: CallContext, ref: JobRef
) -> AsyncIterator[str]:
    """The SSE text of :func:`serve_apps.live_logs.follow_job_logs`' events."""
    async for event in follow_job_logs(hub, state.services.jobs, ctx, ref):
        match event:
            case LiveLine(message=message):
                yield log_frame(message)
            case LiveKeepalive():
                yield SSE_KEEPALIVE
            case LiveConnected():
                yield connected_frame()
            case LiveEnd(status=status):
                yield end_frame(status)
            case LiveError(error=error):
                yield error_frame(_reason(error))
