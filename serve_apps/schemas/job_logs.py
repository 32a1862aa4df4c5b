"""Job logs on the wire (reference §2.2-2.4, SPEC §5.6): the handle arguments and results of the
``JobsService`` log methods, the JSON pages of ``GET …/logs`` and ``…/logs/search``, and the two
streamed formats the gateway writes itself — the raw download file (txt, json, jsonl) and the
Server-Sent Events frames of ``GET …/events``.

The encoders are pure (text in, text out) so their exact bytes are unit tested without a server.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from domain.enums import JobStatus, LogDownloadFormat, LogStream
from domain.event_keys import rfc3339nano
from domain.log_lines import LiveLogMessage
from serve_apps.schemas.common import OutModel, Timestamp
from store.logstore import LogEntry

# ---------------------------------------------------------------------------------------------
# Handle arguments and JSON responses


class LogsQuery(OutModel):
    """Handle argument of ``JobsService.list_logs``: a page of one job's lines, newest first."""

    workflow_id: UUID
    job_id: UUID
    cursor: str | None = None


class LogSearchQuery(OutModel):
    """Handle argument of ``JobsService.search_logs``: ``q`` blank = the plain page, filtered by
    ``stream`` (``None`` = both streams)."""

    workflow_id: UUID
    job_id: UUID
    q: str = ""
    stream: LogStream | None = None
    cursor: str | None = None


class LogDownloadQuery(OutModel):
    """Handle argument of ``JobsService.download_page``: one oldest-first page of a finished job's
    lines for the raw download, starting at ``cursor`` (an encoded :class:`LogCursor`)."""

    workflow_id: UUID
    job_id: UUID
    q: str = ""
    stream: LogStream | None = None
    cursor: str | None = None


class LogLineOut(OutModel):
    """One log line.  In search results ``message`` carries the highlight markers."""

    timestamp: Timestamp
    message: str
    sequence_num: int
    stream: LogStream
    event_id: str

    @classmethod
    def from_entry(cls, entry: LogEntry) -> LogLineOut:
        return cls(
            timestamp=entry.timestamp,
            message=entry.message,
            sequence_num=entry.sequence_num,
            stream=entry.stream,
            event_id=entry.event_id,
        )


class JobLogsPage(OutModel):
    """``GET …/logs``: up to 100 lines newest first; ``cursor`` (null on the last page) starts the
    next-older page with no gap or overlap."""

    id: UUID
    workflow_id: UUID
    logs: list[LogLineOut]
    cursor: str | None


class JobLogsSearchPage(JobLogsPage):
    """``GET …/logs/search``.  With ``q``, matches in ``message`` are wrapped in
    ``__CV_HL_START_<highlight_token>__`` / ``__CV_HL_END_<highlight_token>__`` (a fresh random
    32-hex token per response: treat highlights as data, never as HTML); without ``q`` the
    token is null and nothing is marked."""

    highlight_token: str | None


# ---------------------------------------------------------------------------------------------
# Raw download (reference §2.4)

RAW_CONTENT_TYPES: dict[LogDownloadFormat, str] = {
    LogDownloadFormat.TXT: "text/plain; charset=utf-8",
    LogDownloadFormat.JSON: "application/json",
    LogDownloadFormat.JSONL: "application/x-ndjson",
}

#: What a download says when a page could not be read after the response had started.
RAW_FAILURE_MESSAGE = "failed to fetch logs"


def attachment_disposition(job_id: UUID, fmt: LogDownloadFormat) -> str:
    """``Content-Disposition`` of a download: ``attachment; filename="<job>-logs.<format>"``."""
    return f'attachment; filename="{job_id}-logs.{fmt.value}"'


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity; they are not JSON, so such a line is plain text.
    raise ValueError(name)


def json_message(message: str) -> str | None:
    """The line itself when it is one valid JSON value (object, array, string, number, true,
    false, null — as Go's ``json.Valid``), else ``None``.  The original text is kept, so numbers
    keep their spelling."""
    text = message.strip()
    if not text:
        return None
    try:
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    return text


def raw_entry(entry: LogLineOut) -> str:
    """One download entry as compact JSON: ``timestamp, sequence_num, stream, event_id,
    message_raw`` and ``message_json`` (the parsed line) only when the line is valid JSON."""
    fields = {
        "timestamp": rfc3339nano(entry.timestamp),
        "sequence_num": entry.sequence_num,
        "stream": entry.stream.value,
        "event_id": entry.event_id,
        "message_raw": entry.message,
    }
    text = _json_text(fields)
    parsed = json_message(entry.message)
    if parsed is None:
        return text
    # Spliced verbatim (it was just validated): like Go's json.RawMessage, no re-encoding.
    return f'{text[:-1]},"message_json":{parsed}}}'


class RawLogEncoder:
    """Writes a download incrementally: :meth:`start`, :meth:`page` per page (oldest first),
    then :meth:`finish` — or :meth:`failure` when a page could not be read mid-stream (the
    status is already 200, so the error is appended in the file's own format)."""

    def __init__(
        self,
        fmt: LogDownloadFormat,
        *,
        job_id: UUID,
        workflow_id: UUID,
        q: str = "",
        stream: LogStream | None = None,
    ) -> None:
        self.fmt = fmt
        self._job_id = job_id
        self._workflow_id = workflow_id
        self._q = q
        self._stream = stream
        self._written = 0

    @classmethod
    def for_query(cls, fmt: LogDownloadFormat, query: LogDownloadQuery) -> RawLogEncoder:
        """The encoder of the download ``query`` asks for (its job and filters)."""
        return cls(fmt, job_id=query.job_id, workflow_id=query.workflow_id, q=query.q, stream=query.stream)

    def start(self) -> str:
        """The head of the file (the JSON document's opening up to ``"logs":[``)."""
        if self.fmt is not LogDownloadFormat.JSON:
            return ""
        head = {
            "id": str(self._job_id),
            "workflow_id": str(self._workflow_id),
            "filters": {"q": self._q, "stream": self._stream.value if self._stream else "all"},
        }
        return f'{_json_text(head)[:-1]},"logs":['

    def page(self, entries: list[LogLineOut]) -> str:
        """The text of one page of lines."""
        if not entries:
            return ""
        if self.fmt is LogDownloadFormat.TXT:
            text = "".join(f"{e.message}\n" for e in entries)
        elif self.fmt is LogDownloadFormat.JSONL:
            text = "".join(f"{raw_entry(e)}\n" for e in entries)
        else:
            text = ("," if self._written else "") + ",".join(raw_entry(e) for e in entries)
        self._written += len(entries)
        return text

    def finish(self) -> str:
        """The tail of a complete file."""
        return "]}" if self.fmt is LogDownloadFormat.JSON else ""

    def failure(self, error: str) -> str:
        """The tail of a file cut short by ``error`` (reference §2.4)."""
        if self.fmt is LogDownloadFormat.TXT:
            return f"\n--- ERROR: {RAW_FAILURE_MESSAGE} ---\n{error}\n"
        detail = {"message": RAW_FAILURE_MESSAGE, "error": error}
        if self.fmt is LogDownloadFormat.JSONL:
            return f"{_json_text(detail)}\n"
        return f'],"error":{_json_text(detail)}}}'


# ---------------------------------------------------------------------------------------------
# Server-Sent Events (reference §2.3, SPEC §5.6)

SSE_CONTENT_TYPE = "text/event-stream"
#: A comment line: keeps proxies and browsers from timing an idle stream out.
SSE_KEEPALIVE = ": keep-alive\n\n"


def sse_frame(event: str, data: str) -> str:
    """One SSE frame; a multi-line ``data`` becomes several ``data:`` lines (the client joins them)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"


def connected_frame() -> str:
    """First frame of every stream that passed its preconditions."""
    return sse_frame("connected", _json_text({"status": "connected"}))


def log_frame(message: LiveLogMessage) -> str:
    """A live line as ``event: log`` with ``timestamp, message, sequence_num, stream, event_id``."""
    data = {
        "timestamp": rfc3339nano(message.timestamp) if message.timestamp is not None else None,
        "message": message.message,
        "sequence_num": message.sequence_num,
        "stream": message.stream.value if message.stream is not None else None,
        "event_id": message.event_id,
    }
    return sse_frame("log", _json_text(data))


def end_frame(status: JobStatus | None) -> str:
    """Last frame when the job finished: ``{"status":"stream_ended","job_status":…}``."""
    return sse_frame(
        "end", _json_text({"status": "stream_ended", "job_status": status.value if status else None})
    )


def error_frame(reason: str) -> str:
    """Last frame when the stream cannot (or can no longer) be served: plain-text reason."""
    return sse_frame("error", reason)
