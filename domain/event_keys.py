"""Deterministic event keys (reference §3.6) and the RFC 3339 "nano" time format they embed.

Every consumer dedupes on these strings (outbox ``(topic, event_key)``, ``processed_events``, job
idempotency keys, log ``event_id``), so replays produce the same key and the formats must never drift.
Ids may be given as :class:`uuid.UUID` or as their canonical text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import UUID

from domain.enums import LogStream, WorkflowAction

Id = UUID | str

_TERMINAL_ACTIONS = (WorkflowAction.JOB_COMPLETED, WorkflowAction.JOB_FAILED)
_RFC3339 = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?(?P<tz>[Zz]|[+-]\d{2}:\d{2})$"
)


def rfc3339nano(moment: datetime) -> str:
    """Format like Go's ``time.RFC3339Nano`` in UTC: ``2025-01-02T03:04:05.1234Z``.

    Trailing zeros of the fraction are dropped (and the dot when it is zero), as Go does.  A naive
    datetime is taken to be UTC, which is how PostgreSQL ``TIMESTAMP WITHOUT TIME ZONE`` holds it.
    """
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_rfc3339nano(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with up to nine fractional digits into an aware UTC datetime.

    Python keeps microseconds, so digits past the sixth are truncated (Go writes nanoseconds).
    """
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError(f"invalid RFC 3339 timestamp {text!r}")
    frac = (match.group("frac") or "")[:6].ljust(6, "0")
    tz = match.group("tz").upper().replace("Z", "+00:00")
    base = match.group("base").replace("t", "T").replace(" ", "T")
    return datetime.fromisoformat(f"{base}.{frac}{tz}").astimezone(UTC)


def workflow_event_key(workflow_id: Id, action: WorkflowAction, generation: int) -> str:
    """``workflow:<wf>:<ACTION>:<generation>``, or ``workflow:<wf>:<ACTION>`` when generation is 0
    (DELETE events carry no generation)."""
    if generation < 0:
        raise ValueError("generation must not be negative")
    key = f"workflow:{workflow_id}:{WorkflowAction(action).value}"
    return f"{key}:{generation}" if generation > 0 else key


def dispatch_event_key(job_id: Id, dispatch_attempt: int) -> str:
    """``job:<job>:dispatch:<n>``: one key per dispatch attempt of a QUEUED job."""
    if dispatch_attempt <= 0:
        raise ValueError("dispatch_attempt must be positive")
    return f"job:{job_id}:dispatch:{dispatch_attempt}"


def automatic_job_key(workflow_id: Id, scheduled_at: datetime) -> str:
    """``job:<wf>:<scheduled_at RFC3339Nano>:dispatch``: the default idempotency key of an
    AUTOMATIC job slot (the execution worker's next-slot scheduling)."""
    return f"job:{workflow_id}:{rfc3339nano(scheduled_at)}:dispatch"


def followup_job_key(event_key: str) -> str:
    """``<workflow event key>:automatic-job``: the AUTOMATIC job created by a BUILD/RESCHEDULE."""
    if not event_key:
        raise ValueError("event_key must not be empty")
    return f"{event_key}:automatic-job"


def job_terminal_event_key(job_id: Id, action: WorkflowAction) -> str:
    """``workflow:job:<job>:JOB_COMPLETED`` or ``…:JOB_FAILED`` (the ``workflows`` topic event)."""
    action = WorkflowAction(action)
    if action not in _TERMINAL_ACTIONS:
        raise ValueError(f"{action} is not a terminal job action")
    return f"workflow:job:{job_id}:{action.value}"


def analytics_job_key(job_id: Id) -> str:
    """``analytics:job:<job>:completed``, used for COMPLETED *and* FAILED jobs (reference §0.2.10)."""
    return f"analytics:job:{job_id}:completed"


def analytics_workflow_key(workflow_id: Id) -> str:
    """``analytics:workflow:<wf>``: the WORKFLOWS analytics event emitted once per workflow."""
    return f"analytics:workflow:{workflow_id}"


def log_event_key(job_id: Id, attempt: int, stream: LogStream, sequence_num: int) -> str:
    """``log:<job>:<stream>:<seq>`` for the first attempt, ``log:<job>:attempt:<n>:<stream>:<seq>``
    after it, so retried attempts keep their own lines side by side."""
    if sequence_num < 0:
        raise ValueError("sequence_num must not be negative")
    stream_text = LogStream(stream).value
    if attempt <= 1:
        return f"log:{job_id}:{stream_text}:{sequence_num}"
    return f"log:{job_id}:attempt:{attempt}:{stream_text}:{sequence_num}"


def job_notification_key(job_id: Id, title: str) -> str:
    """``notification:JOB:<job>:<title>``."""
    return f"notification:JOB:{job_id}:{title}"


def workflow_notification_key(workflow_id: Id, title: str, occurrence: str | None = None) -> str:
    """``notification:WORKFLOW:<wf>:<title>`` plus ``:<occurrence>`` when a title can recur
    (e.g. one per generation or per failing job)."""
    key = f"notification:WORKFLOW:{workflow_id}:{title}"
    return f"{key}:{occurrence}" if occurrence else key
