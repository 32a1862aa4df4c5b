"""Job log lines: splitting raw output into lines, numbering them, and the live-channel message.

Rules (reference §4, CONTAINER execution):

* output is split on ``\\n`` (a trailing ``\\r`` is dropped, as Go's ``bufio.ScanLines`` does);
* empty lines are dropped;
* stdout and stderr share **one** sequence counter starting at 0, so ``(job, attempt, seq)`` orders
  every line of a run;
* a line is capped at 64 KiB.  The seed stopped reading a stream at the first longer line; we keep
  the first 64 KiB of it, drop the rest up to the next newline and carry on.

Pure code: the container runner feeds bytes from the Docker SDK, the Ray runner feeds captured
text.  Docker can prefix each line with its own RFC 3339 timestamp (``timestamps=True``);
:func:`split_docker_timestamp` takes it off so a line keeps the time it was *written*.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.enums import JobStatus, LogStream
from domain.event_keys import parse_rfc3339nano

#: The longest line kept (bytes of UTF-8); longer lines are truncated to this.
MAX_LINE_BYTES = 64 * 1024


class LineSplitter:
    """Turns one stream's byte chunks into complete lines (decoded UTF-8, invalid bytes replaced).

    Chunks may end mid-line or even mid-character: the tail is kept until the next chunk or
    :meth:`finish`.  Empty lines never come out.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if max_line_bytes <= 0:
            raise ValueError("max_line_bytes must be positive")
        self._max = max_line_bytes
        self._buffer = bytearray()
        # True while we are skipping the remainder of a line that was already cut at the cap.
        self._discarding = False

    def feed(self, chunk: bytes) -> list[str]:
        """Add a chunk; return the lines it completed."""
        out: list[str] = []
        start = 0
        while start < len(chunk):
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            if not self._discarding:
                self._buffer += chunk[start:end]
                if len(self._buffer) > self._max:
                    self._emit(bytes(self._buffer[: self._max]), out)
                    self._buffer.clear()
                    self._discarding = True
            if newline < 0:
                break
            if not self._discarding:
                self._emit(bytes(self._buffer), out)
            self._buffer.clear()
            self._discarding = False
            start = newline + 1
        return out

    def finish(self) -> list[str]:
        """End of stream: return the unterminated last line, if any."""
        out: list[str] = []
        if not self._discarding:
            self._emit(bytes(self._buffer), out)
        self._buffer.clear()
        self._discarding = False
        return out

    @staticmethod
    def _emit(raw: bytes, out: list[str]) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if raw:
            out.append(raw.decode("utf-8", "replace"))


def split_text(text: str, max_line_bytes: int = MAX_LINE_BYTES) -> list[str]:
    """All non-empty lines of a complete text, with the same rules as :class:`LineSplitter`."""
    splitter = LineSplitter(max_line_bytes)
    return splitter.feed(text.encode("utf-8", "replace")) + splitter.finish()


def split_docker_timestamp(line: str) -> tuple[datetime | None, str]:
    """Split ``"2025-01-02T03:04:05.123456789Z message"`` (Docker's ``timestamps=True`` form) into
    (naive UTC time, message).  A line without a parsable prefix comes back unchanged with ``None``."""
    head, sep, rest = line.partition(" ")
    if not head or not head[0].isdigit():
        return None, line
    try:
        moment = parse_rfc3339nano(head)
    except ValueError:
        return None, line
    return moment.replace(tzinfo=None), rest if sep else ""


class SequenceCounter:
    """The per-run counter shared by stdout and stderr (0, 1, 2, …).

    Not thread-safe on purpose: lines from both streams are numbered in one place (the event loop
    that drains them), which is what makes the numbering a single total order.
    """

    def __init__(self, start: int = 0) -> None:
        self._counter = itertools.count(start)

    def next(self) -> int:
        return next(self._counter)


class LogLine(BaseModel):
    """One numbered line of a job run, before it gets its event id."""

    model_config = ConfigDict(frozen=True)

    stream: LogStream
    sequence_num: int = Field(ge=0)
    message: str
    timestamp: datetime  # naive UTC


def live_channel(job_id: UUID | str) -> str:
    """The Redis pub/sub channel live viewers of a job subscribe to (reference §3.4)."""
    return f"job_logs:{job_id}"


class LiveLogMessage(BaseModel):
    """A message on :func:`live_channel`: a ``log`` line, or the ``end`` marker published once the
    job reached a terminal state (SSE turns it into ``event: end``, SPEC §5.6)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["log", "end"]
    job_id: UUID
    workflow_id: UUID
    event_id: str = ""
    message: str = ""
    sequence_num: int = 0
    stream: LogStream | None = None
    timestamp: datetime | None = None  # naive UTC
    status: JobStatus | None = None  # on ``end`` only

    @classmethod
    def log(cls, *, job_id: UUID, workflow_id: UUID, event_id: str, line: LogLine) -> LiveLogMessage:
        return cls(
            type="log",
            job_id=job_id,
            workflow_id=workflow_id,
            event_id=event_id,
            message=line.message,
            sequence_num=line.sequence_num,
            stream=line.stream,
            timestamp=line.timestamp,
        )

    @classmethod
    def end(cls, *, job_id: UUID, workflow_id: UUID, status: JobStatus) -> LiveLogMessage:
        return cls(type="end", job_id=job_id, workflow_id=workflow_id, status=status)
