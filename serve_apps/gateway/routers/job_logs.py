"""``/workflows/{workflow_id}/jobs/{job_id}/…`` log routes (reference §2.2-2.4, SPEC §5.6).

* ``GET …/logs`` — newest first, 100 per page, cursor; 412 when the workflow keeps no logs.
* ``GET …/logs/search?q=&stream=`` — ClickHouse text search with a per-response highlight token.
* ``GET …/logs/raw?format=txt|json|jsonl`` — a streamed attachment, oldest first: one
  ``JobsService.download_page`` hop per page of 1000 lines (the first before the response starts,
  so 400/404/412 are real statuses; a later failure is appended to the file, reference §2.4).
* ``GET …/events`` — SSE: one hop for the preconditions, then the gateway follows the job's Redis
  channel itself (no hop per line), polling the job's status as a safety net so every stream ends.

The middleware treats ``/events`` and ``/logs/raw`` as streams (no gzip, no request deadline, no
span).  The wire formats are built by :mod:`serve_apps.schemas.job_logs`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from domain.enums import JobStatus, LogDownloadFormat, LogStream
from domain.log_lines import LiveLogMessage, live_channel
from serve_apps.gateway.dependencies import Caller, GatewayState, State
from serve_apps.gateway.errors import error_responses, map_exception
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
from store.redis import create_redis

log = logging.getLogger("chronoverse.gateway.logs")

router = APIRouter(prefix="/workflows/{workflow_id}/jobs/{job_id}", tags=["job logs"])

#: A middle page (asked for with a cursor, followed by another) never changes: older lines are
#: final.  ``private`` because logs are per-user (the seed said ``public``).
STABLE_PAGE_CACHE_CONTROL = "private, max-age=7200"
#: Idle streams get a comment line this often, so proxies keep them open.
SSE_KEEPALIVE_INTERVAL_S = 15.0
#: How often a live stream re-reads the job's status (the ``end`` message is the fast path).
SSE_STATUS_POLL_INTERVAL_S = 2.0
#: After the poll saw a finished job, lines and the ``end`` marker still in flight get this long.
SSE_END_GRACE_S = 2.0

CursorParam = Annotated[str | None, Query(description="From the previous page.")]
StreamParam = Annotated[
    LogStream | Literal[""] | None, Query(description="Only this stream (omitted or empty: both).")
]
QueryParam = Annotated[str, Query(description="Case-insensitive text to find.", max_length=1024)]


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
    encoder = RawLogEncoder(fmt, job_id=job_id, workflow_id=workflow_id, q=q, stream=query.stream)
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
async def live_logs(workflow_id: UUID, job_id: UUID, ctx: Caller, state: State) -> StreamingResponse:
    """Lines published after connecting, for a RUNNING job of a workflow that keeps logs.  Errors
    (not running, no retention, not found) arrive as an ``error`` frame with status 200."""
    return StreamingResponse(
        _live_frames(state, ctx, JobRef(workflow_id=workflow_id, job_id=job_id)),
        media_type=SSE_CONTENT_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _live_frames(state: GatewayState, ctx: CallContext, ref: JobRef) -> AsyncIterator[str]:
    # One connection per viewer, outside the replica's shared pool: a subscribed connection is held
    # for the whole stream and must not starve session lookups.
    redis = create_redis(state.settings.redis, client_name="chronoverse-gateway-live")
    pubsub = redis.pubsub()
    try:
        try:
            # Subscribe before the check, so no line published in between is missed.
            await pubsub.subscribe(live_channel(ref.job_id))
            await state.services.jobs.open_live_logs(ctx, ref)
        except Exception as exc:
            yield error_frame(_reason(exc))
            return
        yield connected_frame()
        async for frame in _follow(state, ctx, ref, pubsub):
            yield frame
    finally:
        await pubsub.aclose()
        await redis.aclose()


async def _follow(state: GatewayState, ctx: CallContext, ref: JobRef, pubsub: Any) -> AsyncIterator[str]:
    """Frames from the live channel until the job's ``end`` (or the poll saw it finish)."""
    loop = asyncio.get_running_loop()
    next_keepalive = loop.time() + SSE_KEEPALIVE_INTERVAL_S
    next_poll = loop.time() + SSE_STATUS_POLL_INTERVAL_S
    finished: JobStatus | None = None
    end_at = 0.0
    while True:
        now = loop.time()
        wake = min(next_keepalive, next_poll if finished is None else end_at)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=max(0.0, wake - now))
        if message is not None and message.get("type") == "message":
            try:
                live = LiveLogMessage.model_validate_json(message["data"])
            except ValidationError:
                log.warning("ignoring a malformed message on %s", live_channel(ref.job_id))
                continue
            if live.type == "end":
                yield end_frame(live.status)
                return
            yield log_frame(live)
            next_keepalive = loop.time() + SSE_KEEPALIVE_INTERVAL_S
            continue
        now = loop.time()
        if finished is not None and now >= end_at:
            yield end_frame(finished)
            return
        if finished is None and now >= next_poll:
            try:
                job = await state.services.jobs.get_job(ctx, ref)
            except Exception as exc:
                yield error_frame(_reason(exc))
                return
            if job.status.terminal:
                finished, end_at = job.status, now + SSE_END_GRACE_S
            next_poll = now + SSE_STATUS_POLL_INTERVAL_S
        if now >= next_keepalive:
            yield SSE_KEEPALIVE
            next_keepalive = now + SSE_KEEPALIVE_INTERVAL_S
