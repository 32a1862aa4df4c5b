"""domain.log_lines: newline splitting, empty-line dropping, the 64 KiB cap and the shared counter."""

from __future__ import annotations

from datetime import datetime
from uuid import uuid4

from domain.enums import JobStatus, LogStream
from domain.log_lines import (
    MAX_LINE_BYTES,
    LineSplitter,
    LiveLogMessage,
    LogLine,
    SequenceCounter,
    live_channel,
    split_docker_timestamp,
    split_text,
)


def test_lines_are_split_on_newlines_and_empty_lines_dropped() -> None:
    assert split_text("a\n\nb\r\n\r\nc") == ["a", "b", "c"]


def test_whitespace_only_lines_are_kept() -> None:
    assert split_text("  \nx\n") == ["  ", "x"]


def test_chunks_may_split_a_line_anywhere() -> None:
    splitter = LineSplitter()
    out = splitter.feed(b"hel") + splitter.feed(b"lo\nwor") + splitter.feed(b"ld\n") + splitter.finish()
    assert out == ["hello", "world"]


def test_a_multibyte_character_split_across_chunks_survives() -> None:
    data = "héllo ✓\n".encode()
    splitter = LineSplitter()
    out: list[str] = []
    for i in range(len(data)):
        out += splitter.feed(data[i : i + 1])
    assert out + splitter.finish() == ["héllo ✓"]


def test_unterminated_last_line_comes_out_at_finish() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntwo") == ["one"]
    assert splitter.finish() == ["two"]
    assert splitter.finish() == []


def test_long_lines_are_capped_and_the_stream_continues() -> None:
    long_line = b"x" * (MAX_LINE_BYTES + 500)
    splitter = LineSplitter()
    out = splitter.feed(long_line[:40_000]) + splitter.feed(long_line[40_000:] + b"\nnext\n")
    assert [len(line) for line in out] == [MAX_LINE_BYTES, 4]
    assert out[1] == "next"


def test_cap_applies_to_small_limits_too() -> None:
    assert split_text("abcdef\ngh", max_line_bytes=3) == ["abc", "gh"]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"bad \xff byte\n") == ["bad \ufffd byte"]


def test_sequence_counter_is_shared_across_streams() -> None:
    counter = SequenceCounter()
    lines = [LogLine(stream=s, sequence_num=counter.next(), message=m, timestamp=datetime(2025, 1, 1))
             for s, m in [(LogStream.STDOUT, "a"), (LogStream.STDERR, "b"), (LogStream.STDOUT, "c")]]
    assert [line.sequence_num for line in lines] == [0, 1, 2]


def test_docker_timestamp_prefix_is_split_off() -> None:
    moment, message = split_docker_timestamp("2025-01-02T03:04:05.123456789Z hello world")
    assert moment == datetime(2025, 1, 2, 3, 4, 5, 123456)
    assert message == "hello world"


def test_line_without_timestamp_is_returned_unchanged() -> None:
    assert split_docker_timestamp("2025 was a year") == (None, "2025 was a year")
    assert split_docker_timestamp("hello") == (None, "hello")


def test_live_messages_round_trip_as_json() -> None:
    job, wf = uuid4(), uuid4()
    line = LogLine(stream=LogStream.STDERR, sequence_num=4, message="m", timestamp=datetime(2025, 1, 1))
    msg = LiveLogMessage.log(job_id=job, workflow_id=wf, event_id="log:x", line=line)
    assert LiveLogMessage.model_validate_json(msg.model_dump_json()) == msg
    end = LiveLogMessage.end(job_id=job, workflow_id=wf, status=JobStatus.COMPLETED)
    assert LiveLogMessage.model_validate_json(end.model_dump_json()).type == "end"
    assert live_channel(job) == f"job_logs:{job}"
