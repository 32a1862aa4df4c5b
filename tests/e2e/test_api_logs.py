"""Job logs over real HTTP (reference §2.2-2.4, §8; SPEC §5.6): pages newest first with a cursor,
stream filter, search with a per-response highlight token, raw downloads in three formats, 412 for
workflows that keep no logs, ownership, and the live SSE stream fed from Redis.

Lines are seeded straight into the log store through the ``log-store`` actor (started here in the
namespace the Serve app looks it up in); workflows come from the API and job rows are inserted
with the status each test needs.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
import pytest_asyncio

from domain.config import ClickHouseConfig
from domain.enums import JobStatus, LogStream
from domain.ids import uuid7
from domain.log_lines import LiveLogMessage, LogLine, live_channel
from store.logstore import LogRow, LogStore
from store.redis import create_redis

ROWS = 250
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
STREAM_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def log_store(serve_api: Any, ray_cluster: Any) -> Iterator[LogStore]:
    """The ``log-store`` actor the Serve app's JobsService reaches (by name, in the app's
    namespace), on a chdb directory of its own, and a client for seeding it."""
    import ray

    from actors.log_store import start_log_store_actor
    from store.logstore.remote import log_store_client

    settings = serve_api.settings
    cfg = ClickHouseConfig(backend="chdb", chdb_path=tempfile.mkdtemp(prefix="cv-e2e-logs-"))
    handle = start_log_store_actor(cfg, settings.ray.namespace, detached=False, num_cpus=0.1)
    yield log_store_client(settings.clickhouse, settings.ray.namespace)
    ray.kill(handle, no_restart=True)


def message_of(seq: int) -> tuple[LogStream, str]:
    """Every fifth line is stderr; every fiftieth is a JSON document."""
    stream = LogStream.STDERR if seq % 5 == 4 else LogStream.STDOUT
    if seq % 50 == 0:
        return stream, json.dumps({"seq": seq, "ok": True})
    return stream, f"{'err' if stream is LogStream.STDERR else 'out'} line {seq:03d}"


async def insert_job(db: Any, user_id: UUID, workflow_id: UUID, status: JobStatus) -> UUID:
    job_id = uuid7()
    now = datetime.now(UTC).replace(tzinfo=None)
    running = status is JobStatus.RUNNING
    await db.execute(
        """INSERT INTO jobs (id, workflow_id, user_id, status, "trigger", scheduled_at, started_at,
                             completed_at, leased_by, lease_expires_at)
           VALUES ($1, $2, $3, $4::job_status, 'MANUAL', $5, $5, $6, $7, $8)""",
        job_id, workflow_id, user_id, status.value, now,
        None if running or not status.terminal else now,
        "e2e-logs" if running else None,
        now + timedelta(hours=1) if running else None,
    )
    return job_id


@dataclass
class SeededJob:
    user: Any
    workflow_id: UUID
    job_id: UUID

    @property
    def base(self) -> str:
        return f"/workflows/{self.workflow_id}/jobs/{self.job_id}"


async def seed(api: Any, user: Any, db: Any, store: LogStore, status: JobStatus,
               rows: int = ROWS) -> SeededJob:
    workflow_id = await api.create_workflow(user, api.container_body())
    job_id = await insert_job(db, user.user_id, workflow_id, status)
    lines = []
    for seq in range(rows):
        stream, message = message_of(seq)
        lines.append(LogRow(event_id=f"log:{job_id}:attempt:1:{stream.value}:{seq}", user_id=user.user_id,
                            workflow_id=workflow_id, job_id=job_id, timestamp=T0 + timedelta(seconds=seq),
                            message=message, sequence_num=seq, stream=stream))
    assert await store.insert(lines) == rows
    return SeededJob(user, workflow_id, job_id)


@pytest_asyncio.fixture
async def finished(api: Any, api_user: Any, db: Any, log_store: LogStore) -> SeededJob:
    """A COMPLETED job of a CONTAINER workflow with 250 lines."""
    return await seed(api, api_user, db, log_store, JobStatus.COMPLETED)


def seqs(body: dict[str, Any]) -> list[int]:
    return [line["sequence_num"] for line in body["logs"]]


# ---------------------------------------------------------------------------------------------
# GET …/logs


async def test_pages_are_100_newest_first_with_no_gap_or_overlap(finished: SeededJob) -> None:
    client = finished.user.client
    first = await client.get(f"{finished.base}/logs")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["id"] == str(finished.job_id)
    assert body["workflow_id"] == str(finished.workflow_id)
    assert seqs(body) == list(range(249, 149, -1))
    assert set(body["logs"][0]) == {"timestamp", "message", "sequence_num", "stream", "event_id"}
    assert body["logs"][0]["timestamp"] == "2025-03-01T12:04:09Z"
    assert first.headers["cache-control"] == "no-store"

    second = await client.get(f"{finished.base}/logs", params={"cursor": body["cursor"]})
    assert seqs(second.json()) == list(range(149, 49, -1))
    assert second.headers["cache-control"] == "private, max-age=7200"

    last = await client.get(f"{finished.base}/logs", params={"cursor": second.json()["cursor"]})
    assert seqs(last.json()) == list(range(49, -1, -1))
    assert last.json()["cursor"] is None
    assert last.headers["cache-control"] == "no-store"


async def test_bad_cursor_is_400(finished: SeededJob) -> None:
    response = await finished.user.client.get(f"{finished.base}/logs", params={"cursor": "%%%"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"


async def test_heartbeat_workflow_logs_are_412_everywhere(api: Any, api_user: Any, db: Any,
                                                          log_store: LogStore) -> None:
    workflow_id = await api.create_workflow(api_user, api.heartbeat_body())
    job_id = await insert_job(db, api_user.user_id, workflow_id, JobStatus.COMPLETED)
    base = f"/workflows/{workflow_id}/jobs/{job_id}"
    for path, params in (("/logs", {}), ("/logs/search", {"q": "x"}), ("/logs/raw", {"format": "json"})):
        response = await api_user.client.get(base + path, params=params)
        assert response.status_code == 412, (path, response.text)
        assert response.json()["error"]["code"] == "log_retention_disabled"
    frames = await sse_frames(api_user.client, f"{base}/events", until={"error"})
    assert frames == [("error", f"logs retention is disabled for workflow: {workflow_id}")]


async def test_another_users_job_logs_are_404(finished: SeededJob, other_user: Any) -> None:
    for path in ("/logs", "/logs/search?q=line", "/logs/raw"):
        response = await other_user.client.get(finished.base + path)
        assert response.status_code == 404, (path, response.text)
    frames = await sse_frames(other_user.client, f"{finished.base}/events", until={"error"})
    assert frames == [("error", "workflow not found")]


async def test_unknown_job_of_own_workflow_is_404(finished: SeededJob) -> None:
    response = await finished.user.client.get(f"/workflows/{finished.workflow_id}/jobs/{uuid7()}/logs")
    assert response.status_code == 404


async def test_logs_need_authentication(finished: SeededJob, api: Any) -> None:
    assert (await api.client().get(f"{finished.base}/logs")).status_code == 401


# ---------------------------------------------------------------------------------------------
# GET …/logs/search


async def test_search_without_q_filters_by_stream(finished: SeededJob) -> None:
    client = finished.user.client
    response = await client.get(f"{finished.base}/logs/search", params={"stream": "stderr"})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = [s for s in range(249, -1, -1) if s % 5 == 4]
    assert seqs(body) == expected
    assert {line["stream"] for line in body["logs"]} == {"stderr"}
    assert body["highlight_token"] is None
    assert body["cursor"] is None
    both = await client.get(f"{finished.base}/logs/search", params={"stream": ""})
    assert seqs(both.json()) == list(range(249, 149, -1))


async def test_bad_stream_is_400(finished: SeededJob) -> None:
    for path in ("/logs/search", "/logs/raw"):
        response = await finished.user.client.get(finished.base + path, params={"stream": "foo"})
        assert response.status_code == 400, (path, response.text)
        assert "stream" in response.json()["error"]["message"]


async def test_search_marks_matches_with_a_fresh_token(finished: SeededJob) -> None:
    client = finished.user.client
    response = await client.get(f"{finished.base}/logs/search", params={"q": "LINE 12"})
    assert response.status_code == 200, response.text
    body = response.json()
    token = body["highlight_token"]
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    assert seqs(body) == [s for s in range(129, 119, -1) if s % 50]
    for line in body["logs"]:
        prefix = "err" if line["stream"] == "stderr" else "out"
        assert line["message"] == (
            f"{prefix} __CV_HL_START_{token}__line 12__CV_HL_END_{token}__{line['sequence_num'] % 10}")
    again = await client.get(f"{finished.base}/logs/search", params={"q": "LINE 12"})
    assert again.json()["highlight_token"] != token


async def test_search_pages_and_stream_filter_combine(finished: SeededJob) -> None:
    client = finished.user.client
    first = await client.get(f"{finished.base}/logs/search", params={"q": "out line", "stream": "stdout"})
    body = first.json()
    expected = [s for s in range(249, -1, -1) if s % 5 != 4 and s % 50]
    assert seqs(body) == expected[:100]
    second = await client.get(f"{finished.base}/logs/search",
                              params={"q": "out line", "stream": "stdout", "cursor": body["cursor"]})
    assert seqs(second.json()) == expected[100:]
    assert second.json()["cursor"] is None


# ---------------------------------------------------------------------------------------------
# GET …/logs/raw


async def test_raw_txt_is_an_oldest_first_attachment(finished: SeededJob) -> None:
    response = await finished.user.client.get(f"{finished.base}/logs/raw")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["content-disposition"] == f'attachment; filename="{finished.job_id}-logs.txt"'
    assert "content-encoding" not in response.headers
    assert response.text == "".join(message_of(s)[1] + "\n" for s in range(ROWS))


async def test_raw_jsonl_has_one_entry_per_line_with_message_json(finished: SeededJob) -> None:
    response = await finished.user.client.get(f"{finished.base}/logs/raw", params={"format": "jsonl"},
                                              headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert "content-encoding" not in response.headers
    entries = [json.loads(row) for row in response.text.splitlines()]
    assert [e["sequence_num"] for e in entries] == list(range(ROWS))
    assert entries[1] == {"timestamp": "2025-03-01T12:00:01Z", "sequence_num": 1, "stream": "stdout",
                          "event_id": f"log:{finished.job_id}:attempt:1:stdout:1",
                          "message_raw": "out line 001"}
    assert entries[50]["message_json"] == {"seq": 50, "ok": True}
    assert entries[50]["message_raw"] == '{"seq": 50, "ok": true}'


async def test_raw_json_is_one_document_with_filters(finished: SeededJob) -> None:
    response = await finished.user.client.get(f"{finished.base}/logs/raw",
                                              params={"format": "json", "stream": "stderr", "q": "err"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == f'attachment; filename="{finished.job_id}-logs.json"'
    doc = response.json()
    assert doc["id"] == str(finished.job_id)
    assert doc["workflow_id"] == str(finished.workflow_id)
    assert doc["filters"] == {"q": "err", "stream": "stderr"}
    assert [e["sequence_num"] for e in doc["logs"]] == [s for s in range(ROWS) if s % 5 == 4]
    assert all("__CV_HL_" not in e["message_raw"] for e in doc["logs"])


async def test_raw_pages_through_more_than_one_store_page(api: Any, api_user: Any, db: Any,
                                                          log_store: LogStore) -> None:
    job = await seed(api, api_user, db, log_store, JobStatus.FAILED, rows=2100)
    response = await api_user.client.get(f"{job.base}/logs/raw", params={"format": "json"})
    assert [e["sequence_num"] for e in response.json()["logs"]] == list(range(2100))


async def test_raw_bad_format_is_400(finished: SeededJob) -> None:
    response = await finished.user.client.get(f"{finished.base}/logs/raw", params={"format": "xml"})
    assert response.status_code == 400
    assert "format" in response.json()["error"]["message"]


async def test_raw_of_a_running_job_is_400_not_completed(api: Any, api_user: Any, db: Any,
                                                         log_store: LogStore) -> None:
    job = await seed(api, api_user, db, log_store, JobStatus.RUNNING, rows=3)
    response = await api_user.client.get(f"{job.base}/logs/raw")
    assert response.status_code == 400
    assert response.json()["error"] == {"code": "job_not_completed", "message": "job is not yet completed"}


# ---------------------------------------------------------------------------------------------
# GET …/events


async def read_frames(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` per SSE frame (comments skipped)."""
    event, data = "", list[str]()
    async for raw in response.aiter_lines():
        if raw == "":
            if event or data:
                yield event, "\n".join(data)
            event, data = "", []
        elif raw.startswith(":"):
            continue
        elif raw.startswith("event: "):
            event = raw.removeprefix("event: ")
        elif raw.startswith("data: "):
            data.append(raw.removeprefix("data: "))


async def sse_frames(client: httpx.AsyncClient, url: str, *, until: set[str]) -> list[tuple[str, str]]:
    """Every frame up to and including the first whose event is in ``until``."""
    frames: list[tuple[str, str]] = []
    async with asyncio.timeout(STREAM_TIMEOUT_S), client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        async for frame in read_frames(response):
            frames.append(frame)
            if frame[0] in until:
                break
    return frames


def live_line(job: SeededJob, seq: int, message: str) -> str:
    line = LogLine(stream=LogStream.STDOUT, sequence_num=seq, message=message,
                   timestamp=datetime(2025, 3, 1, 13, 0, seq))
    live = LiveLogMessage.log(job_id=job.job_id, workflow_id=job.workflow_id,
                              event_id=f"log:{job.job_id}:attempt:1:stdout:{seq}", line=line)
    return live.model_dump_json()


async def test_live_stream_sends_connected_then_new_lines_then_end(api: Any, api_user: Any, db: Any,
                                                                   log_store: LogStore,
                                                                   serve_api: Any) -> None:
    job = await seed(api, api_user, db, log_store, JobStatus.RUNNING, rows=3)
    redis = create_redis(serve_api.settings.redis, client_name="e2e-logs")
    channel = live_channel(job.job_id)
    try:
        stream = api_user.client.stream("GET", f"{job.base}/events")
        async with asyncio.timeout(STREAM_TIMEOUT_S), stream as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"
            assert "content-encoding" not in r.headers
            frames = read_frames(r)
            assert await anext(frames) == ("connected", '{"status":"connected"}')
            for seq in (3, 4):
                await redis.publish(channel, live_line(job, seq, f"live {seq}"))
            got = [await anext(frames), await anext(frames)]
            assert [event for event, _ in got] == ["log", "log"]
            assert [json.loads(data) for _, data in got] == [
                {"timestamp": f"2025-03-01T13:00:0{seq}Z", "message": f"live {seq}", "sequence_num": seq,
                 "stream": "stdout", "event_id": f"log:{job.job_id}:attempt:1:stdout:{seq}"}
                for seq in (3, 4)]
            end = LiveLogMessage.end(job_id=job.job_id, workflow_id=job.workflow_id,
                                     status=JobStatus.COMPLETED)
            await redis.publish(channel, end.model_dump_json())
            event, data = await anext(frames)
            assert (event, json.loads(data)) == ("end", {"status": "stream_ended", "job_status": "COMPLETED"})
            assert [frame async for frame in frames] == []  # the server closed the stream
    finally:
        await redis.aclose()


async def test_live_stream_ends_when_the_job_finishes_without_an_end_message(
    api: Any, api_user: Any, db: Any, log_store: LogStore
) -> None:
    job = await seed(api, api_user, db, log_store, JobStatus.RUNNING, rows=1)
    async with asyncio.timeout(STREAM_TIMEOUT_S), api_user.client.stream("GET", f"{job.base}/events") as r:
        frames = read_frames(r)
        assert (await anext(frames))[0] == "connected"
        await db.execute("UPDATE jobs SET status = 'FAILED', completed_at = now() AT TIME ZONE 'utc' "
                         "WHERE id = $1", job.job_id)
        event, data = await anext(frames)
        assert (event, json.loads(data)) == ("end", {"status": "stream_ended", "job_status": "FAILED"})


async def test_live_stream_of_a_finished_job_is_an_error_frame(finished: SeededJob) -> None:
    frames = await sse_frames(finished.user.client, f"{finished.base}/events", until={"error", "connected"})
    assert frames == [("error", "job is not running: COMPLETED")]
