"""The wire formats of the log routes without a server: raw download files (txt, json, jsonl,
``message_json``, mid-stream failures), SSE frames and the log pages' ``Cache-Control``."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

import pytest

from domain.enums import JobStatus, LogDownloadFormat, LogStream
from domain.log_lines import LiveLogMessage, LogLine
from serve_apps.gateway.routers.job_logs import STABLE_PAGE_CACHE_CONTROL, page_cache_control
from serve_apps.schemas.job_logs import (
    LogLineOut,
    RawLogEncoder,
    attachment_disposition,
    connected_frame,
    end_frame,
    error_frame,
    json_message,
    log_frame,
    raw_entry,
    sse_frame,
)

JOB = UUID("01920000-0000-7000-8000-000000000001")
WORKFLOW = UUID("01920000-0000-7000-8000-000000000002")
AT = datetime(2025, 1, 2, 3, 4, 5, 120000)


def line(seq: int, message: str, stream: LogStream = LogStream.STDOUT) -> LogLineOut:
    return LogLineOut(timestamp=AT, message=message, sequence_num=seq, stream=stream,
                      event_id=f"log:{JOB}:attempt:1:{stream.value}:{seq}")


def download(fmt: LogDownloadFormat, pages: list[list[LogLineOut]], *, error: str | None = None,
             q: str = "", stream: LogStream | None = None) -> str:
    encoder = RawLogEncoder(fmt, job_id=JOB, workflow_id=WORKFLOW, q=q, stream=stream)
    text = encoder.start() + "".join(encoder.page(p) for p in pages)
    return text + (encoder.failure(error) if error is not None else encoder.finish())


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ("[1, 2]", "[1, 2]"),
        ("  42 ", "42"),
        ('"quoted"', '"quoted"'),
        ("null", "null"),
        ("hello world", None),
        ("{broken", None),
        ("NaN", None),
        ("", None),
    ],
)
def test_json_message_accepts_exactly_valid_json_values(message: str, expected: str | None) -> None:
    assert json_message(message) == expected


def test_raw_entry_has_the_reference_fields_and_message_json_only_for_json_lines() -> None:
    plain = json.loads(raw_entry(line(3, "hello")))
    assert plain == {"timestamp": "2025-01-02T03:04:05.12Z", "sequence_num": 3, "stream": "stdout",
                     "event_id": f"log:{JOB}:attempt:1:stdout:3", "message_raw": "hello"}
    structured = json.loads(raw_entry(line(4, '{"level": "info", "n": 1.50}', LogStream.STDERR)))
    assert structured["message_raw"] == '{"level": "info", "n": 1.50}'
    assert structured["message_json"] == {"level": "info", "n": 1.5}
    assert structured["stream"] == "stderr"


def test_raw_entry_keeps_the_json_line_verbatim() -> None:
    assert raw_entry(line(1, "[1.50,2e3]")).endswith(',"message_json":[1.50,2e3]}')


def test_txt_download_is_one_message_per_line_across_pages() -> None:
    text = download(LogDownloadFormat.TXT, [[line(0, "a"), line(1, "b")], [line(2, "c")]])
    assert text == "a\nb\nc\n"


def test_jsonl_download_is_one_entry_object_per_line() -> None:
    text = download(LogDownloadFormat.JSONL, [[line(0, "a")], [line(1, '{"k":true}')]])
    rows = [json.loads(row) for row in text.splitlines()]
    assert [r["sequence_num"] for r in rows] == [0, 1]
    assert "message_json" not in rows[0]
    assert rows[1]["message_json"] == {"k": True}


def test_json_download_is_one_document_with_filters_and_every_page() -> None:
    pages = [[line(0, "a"), line(1, "b")], [], [line(2, "c")]]
    doc = json.loads(download(LogDownloadFormat.JSON, pages, q="b", stream=LogStream.STDERR))
    assert doc["id"] == str(JOB)
    assert doc["workflow_id"] == str(WORKFLOW)
    assert doc["filters"] == {"q": "b", "stream": "stderr"}
    assert [entry["message_raw"] for entry in doc["logs"]] == ["a", "b", "c"]


def test_json_download_of_no_lines_is_an_empty_list_and_stream_defaults_to_all() -> None:
    doc = json.loads(download(LogDownloadFormat.JSON, [[]]))
    assert doc["logs"] == []
    assert doc["filters"] == {"q": "", "stream": "all"}


def test_failures_are_appended_in_each_format() -> None:
    assert download(LogDownloadFormat.TXT, [[line(0, "a")]], error="boom") == (
        "a\n\n--- ERROR: failed to fetch logs ---\nboom\n")
    last = download(LogDownloadFormat.JSONL, [[line(0, "a")]], error="boom").splitlines()[-1]
    assert json.loads(last) == {"message": "failed to fetch logs", "error": "boom"}
    doc = json.loads(download(LogDownloadFormat.JSON, [[line(0, "a")]], error="boom"))
    assert [e["message_raw"] for e in doc["logs"]] == ["a"]
    assert doc["error"] == {"message": "failed to fetch logs", "error": "boom"}


def test_attachment_disposition_names_the_job_and_format() -> None:
    assert attachment_disposition(JOB, LogDownloadFormat.JSONL) == (
        f'attachment; filename="{JOB}-logs.jsonl"')


def test_sse_frames_have_event_and_data_lines() -> None:
    assert connected_frame() == 'event: connected\ndata: {"status":"connected"}\n\n'
    assert error_frame("job is not running: COMPLETED") == (
        "event: error\ndata: job is not running: COMPLETED\n\n")
    assert end_frame(JobStatus.COMPLETED) == (
        'event: end\ndata: {"status":"stream_ended","job_status":"COMPLETED"}\n\n')


def test_multi_line_sse_data_becomes_several_data_lines() -> None:
    assert sse_frame("error", "one\ntwo") == "event: error\ndata: one\ndata: two\n\n"


def test_log_frame_carries_the_line_fields() -> None:
    message = LiveLogMessage.log(job_id=JOB, workflow_id=WORKFLOW, event_id="log:x:stdout:7",
                                 line=LogLine(stream=LogStream.STDERR, sequence_num=7, message="hi",
                                              timestamp=AT))
    frame = log_frame(message)
    head, data, blank = frame.split("\n", 2)
    assert head == "event: log"
    assert blank == "\n"
    assert json.loads(data.removeprefix("data: ")) == {
        "timestamp": "2025-01-02T03:04:05.12Z", "message": "hi", "sequence_num": 7, "stream": "stderr",
        "event_id": "log:x:stdout:7"}


@pytest.mark.parametrize(
    ("request_cursor", "next_cursor", "expected"),
    [
        (None, None, "no-store"),
        (None, "next", "no-store"),
        ("this", None, "no-store"),
        ("this", "next", STABLE_PAGE_CACHE_CONTROL),
    ],
)
def test_only_middle_log_pages_are_cacheable(request_cursor: str | None, next_cursor: str | None,
                                             expected: str) -> None:
    assert page_cache_control(request_cursor, next_cursor) == expected
