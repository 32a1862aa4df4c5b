"""The ClickHouse log store on real embedded ClickHouse (chdb), through both backends.

``ChdbLogStore`` talks to chdb directly; ``HttpLogStore`` is driven through clickhouse-connect's own
chdb interface, so its parameter binding and statement path run for real (only the HTTP transport
is not exercised here).  chdb allows one data directory per process, so both share one directory,
and every test uses fresh user/workflow/job ids.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.config import ClickHouseConfig
from domain.enums import LogStream
from domain.errors import Invalid, Unavailable
from domain.log_cursor import LogCursor
from store.logstore import (
    ChdbLogStore,
    HttpLogStore,
    LogEntry,
    LogRow,
    LogStore,
    create_log_store,
    new_highlight_token,
)
from store.logstore import sql as log_sql
from store.logstore.chdb import escape_param
from store.logstore.search import highlight, like_pattern

T0 = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)


@pytest.fixture(scope="module")
def chdb_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    # One chdb data directory per process: use the suite's (the stack's) when there is one.
    try:
        stack = request.getfixturevalue("stack")
    except pytest.FixtureLookupError:
        return str(tmp_path_factory.mktemp("chdb"))
    return str(stack.settings.clickhouse.chdb_path)


@pytest.fixture(scope="module")
def engine(chdb_path: str) -> Iterator[Any]:
    """A clickhouse-connect client on the same chdb directory: the HttpLogStore's transport here,
    and the tests' window on raw table contents."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(interface="chdb", path=chdb_path)
    yield client
    client.close()


@pytest.fixture(scope="module", params=["chdb", "clickhouse-connect"])
async def store(request: pytest.FixtureRequest, chdb_path: str, engine: Any) -> AsyncIterator[LogStore]:
    backend: LogStore
    if request.param == "chdb":
        backend = ChdbLogStore(chdb_path)
    else:
        backend = HttpLogStore(ClickHouseConfig(backend="http"), client=engine)
    await backend.ensure_schema()
    yield backend
    if request.param == "chdb":
        await backend.close()


def raw(engine: Any, statement: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a statement run straight on the engine, bypassing the store."""
    data = engine.raw_query(statement, parameters=params or None, fmt="JSONEachRow")
    return [json.loads(line) for line in data.decode().splitlines() if line]


class Job:
    """Fresh ids of one job and a factory for its log rows."""

    def __init__(self, user_id: uuid.UUID | None = None, workflow_id: uuid.UUID | None = None) -> None:
        self.user_id = user_id or uuid.uuid4()
        self.workflow_id = workflow_id or uuid.uuid4()
        self.job_id = uuid.uuid4()

    @property
    def ids(self) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        return self.user_id, self.workflow_id, self.job_id

    def row(self, seq: int, message: str = "", *, stream: LogStream = LogStream.STDOUT, attempt: int = 1,
            expires_at: datetime | None = None) -> LogRow:
        prefix = f"log:{self.job_id}:" + (f"attempt:{attempt}:" if attempt > 1 else "")
        return LogRow(event_id=f"{prefix}{stream.value}:{seq}", user_id=self.user_id,
                      workflow_id=self.workflow_id, job_id=self.job_id,
                      timestamp=T0 + timedelta(milliseconds=seq), message=message or f"line {seq}",
                      sequence_num=seq, stream=stream, attempt=attempt, expires_at=expires_at)


async def read_all(store: LogStore, job: Job, *, ascending: bool = False, stream: LogStream | None = None,
                   query: str | None = None, limit: int = 100) -> tuple[list[LogEntry], list[int]]:
    """Every page in order (through encoded cursors, as a client would); returns lines and page sizes."""
    lines: list[LogEntry] = []
    sizes: list[int] = []
    cursor: LogCursor | None = None
    while True:
        if query is None:
            page = await store.page(*job.ids, stream=stream, cursor=cursor, limit=limit, ascending=ascending)
        else:
            page = await store.search(*job.ids, query=query, stream=stream, cursor=cursor, limit=limit,
                                      ascending=ascending)
        lines += page.logs
        sizes.append(len(page.logs))
        if page.cursor is None:
            return lines, sizes
        cursor = LogCursor.decode(page.cursor.encode())
        assert len(sizes) < 100, "pagination does not terminate"


def sort_key(line: LogEntry) -> tuple[int, str, str]:
    return (-line.sequence_num, line.stream.value, line.event_id)


# --- parameter encoding and search helpers -------------------------------------------------------


def test_escaped_parameters_reach_chdb_unchanged(chdb_path: str) -> None:
    # The embedded backend's one quoting function, checked against the engine itself.
    from chdb import session

    text = "".join(chr(i) for i in range(1, 128)) + "\0 é ☃ 😀 \\N \\' '; DROP TABLE job_logs; --"
    probe = session.Session(chdb_path)
    try:
        out = probe.query("SELECT {v:String} AS v", "JSONEachRow", params={"v": escape_param(text)})
    finally:
        probe.close()
    assert json.loads(out.bytes())["v"] == text


def test_like_pattern_escapes_wildcards_and_backslashes() -> None:
    assert like_pattern("50%_a\\b") == "%50\\%\\_a\\\\b%"


def test_highlight_wraps_every_match_case_insensitively_keeping_the_original_text() -> None:
    token = "0123456789abcdef0123456789abcdef"
    start, end = f"__CV_HL_START_{token}__", f"__CV_HL_END_{token}__"
    assert highlight("Error: error ERROR", "error", token) == (
        f"{start}Error{end}: {start}error{end} {start}ERROR{end}")
    assert highlight("a.b axb", ".", token) == f"a{start}.{end}b axb"
    assert highlight("nothing here", "zzz", token) == "nothing here"


def test_highlight_tokens_are_32_hex_and_fresh() -> None:
    tokens = {new_highlight_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in tokens)


# --- schema ---------------------------------------------------------------------------------------


async def test_ensure_schema_is_idempotent(store: LogStore, engine: Any) -> None:
    before = raw(engine, "SELECT version, dirty FROM schema_migrations ORDER BY version, applied_at")
    await store.ensure_schema()
    await store.ensure_schema()
    after = raw(engine, "SELECT version, dirty FROM schema_migrations ORDER BY version, applied_at")
    assert after == before
    assert {r["version"] for r in after} >= {1}
    assert raw(engine, "SELECT count() AS n FROM system.tables WHERE database = currentDatabase() "
                       "AND name = 'job_logs'")[0]["n"] == 1


async def test_interrupted_migration_is_applied_again(store: LogStore, engine: Any) -> None:
    engine.raw_query("INSERT INTO schema_migrations (version, dirty, applied_at) VALUES (1, 1, now64(3))")
    await store.ensure_schema()
    state = raw(engine, "SELECT argMax(dirty, applied_at) AS dirty FROM schema_migrations WHERE version = 1")
    assert int(state[0]["dirty"]) == 0


async def test_table_has_reference_key_indexes_and_retention_ttl(store: LogStore, engine: Any) -> None:
    ddl = raw(engine, "SHOW CREATE TABLE job_logs")[0]["statement"]
    assert "ReplacingMergeTree" in ddl
    assert "ORDER BY (user_id, workflow_id, job_id, sequence_num, stream, event_id)" in ddl
    assert "PARTITION BY toDate(timestamp)" in ddl
    for index in ("idx_user_id user_id TYPE minmax", "idx_workflow_id workflow_id TYPE minmax",
                  "idx_stream stream TYPE tokenbf_v1(512, 2, 0)",
                  "idx_message_ngrams lowerUTF8(message) TYPE ngrambf_v1"):
        assert index in ddl
    assert re.search(r"TTL ifNull\(expires_at, ", ddl)


async def test_search_statement_can_use_the_ngram_index(store: LogStore, engine: Any) -> None:
    job = Job()
    await store.insert([job.row(i, "hay") for i in range(10)])
    plan = engine.raw_query(
        "EXPLAIN indexes = 1 " + log_sql.SEARCH_NEWEST_FIRST,
        parameters={"user_id": str(job.user_id), "workflow_id": str(job.workflow_id),
                    "job_id": str(job.job_id), "stream": "", "has_cursor": 0, "cursor_sequence_num": 0,
                    "cursor_stream": "", "cursor_event_id": "", "limit": 101,
                    "pattern": like_pattern("needle")},
        fmt="TSV").decode()
    assert "idx_message_ngrams" in plan


# --- insert and read ------------------------------------------------------------------------------


async def test_inserted_rows_read_back_with_every_field(store: LogStore) -> None:
    job = Job()
    expires = datetime.now(UTC) + timedelta(days=7)
    rows = [job.row(0, "first", expires_at=expires), job.row(1, "second", stream=LogStream.STDERR, attempt=2)]
    assert await store.insert(rows) == 2
    page = await store.page(*job.ids)
    assert [(line.event_id, line.timestamp, line.message, line.sequence_num, line.stream, line.attempt)
            for line in page.logs] == [
        (rows[1].event_id, T0 + timedelta(milliseconds=1), "second", 1, LogStream.STDERR, 2),
        (rows[0].event_id, T0, "first", 0, LogStream.STDOUT, 1),
    ]
    assert page.cursor is None
    assert await store.count(*job.ids) == 2


async def test_replayed_insert_adds_no_rows_and_no_count(store: LogStore, engine: Any) -> None:
    job = Job()
    rows = [job.row(i, stream=s) for i in range(20) for s in LogStream]
    assert await store.insert(rows) == 40
    assert await store.insert(rows) == 0
    assert await store.insert(rows[:5] + rows[:5] + [job.row(99)]) == 1
    assert await store.count(*job.ids) == 41
    lines, _ = await read_all(store, job)
    assert len(lines) == len({line.event_id for line in lines}) == 41
    stored = raw(engine, "SELECT count() AS n FROM job_logs WHERE job_id = {j:UUID}", j=str(job.job_id))
    assert int(stored[0]["n"]) == 41


async def test_duplicate_event_ids_on_disk_are_read_once(store: LogStore, engine: Any) -> None:
    # A racing writer (server backend) can store a line twice; reads and counts must not show it.
    job = Job()
    row = job.row(0, "twice")
    await store.insert([row])
    engine.raw_query(log_sql.INSERT_ROWS, parameters={"rows": json.dumps({
        "event_id": row.event_id, "user_id": str(job.user_id), "workflow_id": str(job.workflow_id),
        "job_id": str(job.job_id), "timestamp_ms": 0, "message": "twice", "sequence_num": 0,
        "stream": "stdout", "attempt": 1, "expires_at_ms": None})})
    stored = raw(engine, "SELECT count() AS n FROM job_logs WHERE job_id = {j:UUID}", j=str(job.job_id))
    assert int(stored[0]["n"]) == 2
    assert [line.event_id for line in (await store.page(*job.ids)).logs] == [row.event_id]
    assert await store.count(*job.ids) == 1


async def test_pages_of_100_newest_first_cover_every_row_exactly_once(store: LogStore) -> None:
    job = Job()
    # 250 lines: both streams, and a retried attempt whose sequence numbers repeat the first one's.
    rows = [job.row(i, stream=LogStream.STDOUT) for i in range(100)]
    rows += [job.row(i, stream=LogStream.STDERR) for i in range(0, 100, 2)]
    rows += [job.row(i, stream=s, attempt=2) for i in range(50) for s in LogStream]
    random.Random(7).shuffle(rows)
    assert len(rows) == 250
    for start in range(0, 250, 60):
        await store.insert(rows[start:start + 60])
    lines, sizes = await read_all(store, job)
    assert sizes == [100, 100, 50]
    assert [line.event_id for line in lines] == [r.event_id for r in sorted(
        rows, key=lambda r: (-r.sequence_num, r.stream.value, r.event_id))]
    assert lines == sorted(lines, key=sort_key)


async def test_ascending_pages_cover_every_row_oldest_first(store: LogStore) -> None:
    job = Job()
    rows = [job.row(i, stream=s) for i in range(120) for s in LogStream]
    await store.insert(rows)
    lines, sizes = await read_all(store, job, ascending=True, limit=100)
    assert sizes == [100, 100, 40]
    assert [line.event_id for line in lines] == [r.event_id for r in sorted(
        rows, key=lambda r: (r.sequence_num, r.stream.value, r.event_id))]


async def test_page_exactly_full_has_no_next_cursor(store: LogStore) -> None:
    job = Job()
    await store.insert([job.row(i) for i in range(100)])
    page = await store.page(*job.ids)
    assert len(page.logs) == 100
    assert page.cursor is None


async def test_stream_filter_returns_only_that_stream(store: LogStore) -> None:
    job = Job()
    await store.insert([job.row(i, f"{s.value} {i}", stream=s) for i in range(30) for s in LogStream])
    for stream in LogStream:
        lines, _ = await read_all(store, job, stream=stream, limit=7)
        assert len(lines) == 30
        assert {line.stream for line in lines} == {stream}
        found, _ = await read_all(store, job, stream=stream, query="1")
        assert {line.stream for line in found} == {stream}
        assert {line.sequence_num for line in found} == {1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 21}


async def test_bad_limit_is_invalid(store: LogStore) -> None:
    with pytest.raises(Invalid):
        await store.page(*Job().ids, limit=0)
    with pytest.raises(Invalid):
        await store.page(*Job().ids, limit=1001)


# --- search ---------------------------------------------------------------------------------------

TRICKY = [
    "plain text line",
    "it's a 'quoted' \"string\"",
    "back\\slash and \\n literal",
    "100% done",
    "under_score",
    "ÉCOLE émoji 😀 naïve",
    "tab\tand\nnewline",
    "percent % and underscore _ together",
    "x'; DROP TABLE job_logs; --",
]


@pytest.fixture
async def tricky_job(store: LogStore) -> Job:
    job = Job()
    await store.insert([job.row(i, msg) for i, msg in enumerate(TRICKY)])
    return job


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("TEXT", {"plain text line"}),
        ("'quoted'", {"it's a 'quoted' \"string\""}),
        ('"string"', {"it's a 'quoted' \"string\""}),
        ("\\", {"back\\slash and \\n literal"}),
        ("\\n", {"back\\slash and \\n literal"}),
        ("%", {"100% done", "percent % and underscore _ together"}),
        ("_", {"under_score", "percent % and underscore _ together", "x'; DROP TABLE job_logs; --"}),
        ("0%", {"100% done"}),
        ("école", {"ÉCOLE émoji 😀 naïve"}),
        ("😀", {"ÉCOLE émoji 😀 naïve"}),
        ("b\tAND\nN", {"tab\tand\nnewline"}),
        ("'; drop table", {"x'; DROP TABLE job_logs; --"}),
        ("no such text", set()),
    ],
)
async def test_search_matches_substrings_literally_and_case_insensitively(
        store: LogStore, tricky_job: Job, query: str, expected: set[str]) -> None:
    page = await store.search(*tricky_job.ids, query=query)
    assert {line.message for line in page.logs} == expected


async def test_search_highlights_every_match_with_the_callers_token(store: LogStore, tricky_job: Job) -> None:
    token = new_highlight_token()
    start, end = f"__CV_HL_START_{token}__", f"__CV_HL_END_{token}__"
    page = await store.search(*tricky_job.ids, query="_", highlight_token=token)
    assert {line.message for line in page.logs} == {
        f"under{start}_{end}score",
        f"percent % and underscore {start}_{end} together",
        f"x'; DROP TABLE job{start}_{end}logs; --",
    }
    page = await store.search(*tricky_job.ids, query="É", highlight_token=token)
    assert {line.message for line in page.logs} == {
        f"{start}É{end}COLE {start}é{end}moji 😀 naïve"}
    page = await store.search(*tricky_job.ids, query="it's")
    assert [line.message for line in page.logs] == ["it's a 'quoted' \"string\""]


async def test_search_rejects_a_highlight_token_that_is_not_alphanumeric(store: LogStore) -> None:
    with pytest.raises(Invalid):
        await store.search(*Job().ids, query="x", highlight_token="__evil<script>__")


async def test_blank_query_is_a_plain_page(store: LogStore, tricky_job: Job) -> None:
    page = await store.search(*tricky_job.ids, query="   ", highlight_token=new_highlight_token())
    assert [line.message for line in page.logs] == list(reversed(TRICKY))


async def test_search_pages_cover_every_match_exactly_once(store: LogStore) -> None:
    job = Job()
    await store.insert([job.row(i, f"{'Needle' if i % 3 == 0 else 'hay'} {i}", stream=s)
                        for i in range(300) for s in LogStream])
    lines, sizes = await read_all(store, job, query="needle", limit=100)
    assert sizes == [100, 100]
    assert [line.sequence_num for line in lines[::2]] == list(range(297, -1, -3))
    assert lines == sorted(lines, key=sort_key)
    oldest_first, _ = await read_all(store, job, query="NEEDLE", ascending=True, limit=33)
    assert [line.event_id for line in oldest_first] == [line.event_id for line in sorted(
        lines, key=lambda line: (line.sequence_num, line.stream.value, line.event_id))]


# --- scoping and deletion -------------------------------------------------------------------------


async def test_another_users_ids_see_nothing(store: LogStore) -> None:
    owner = Job()
    await store.insert([owner.row(i, "secret") for i in range(5)])
    intruder = Job(user_id=uuid.uuid4(), workflow_id=owner.workflow_id)
    intruder.job_id = owner.job_id
    assert (await store.page(*intruder.ids)).logs == []
    assert (await store.search(*intruder.ids, query="secret")).logs == []
    assert await store.count(*intruder.ids) == 0
    other_workflow = Job(user_id=owner.user_id)
    other_workflow.job_id = owner.job_id
    assert (await store.page(*other_workflow.ids)).logs == []
    await store.delete_workflow(intruder.user_id, owner.workflow_id)
    assert await store.count(*owner.ids) == 5


async def test_delete_workflow_removes_only_that_workflow(store: LogStore) -> None:
    doomed_a = Job()
    doomed_b = Job(user_id=doomed_a.user_id, workflow_id=doomed_a.workflow_id)
    sibling = Job(user_id=doomed_a.user_id)
    stranger = Job()
    for job in (doomed_a, doomed_b, sibling, stranger):
        await store.insert([job.row(i) for i in range(10)])
    await store.delete_workflow(doomed_a.user_id, doomed_a.workflow_id)
    assert await store.count(*doomed_a.ids) == 0
    assert await store.count(*doomed_b.ids) == 0
    assert await store.count(*sibling.ids) == 10
    assert await store.count(*stranger.ids) == 10


async def test_delete_events_removes_only_those_events(store: LogStore) -> None:
    job = Job()
    rows = [job.row(i) for i in range(10)]
    await store.insert(rows)
    await store.delete_events([rows[0].event_id, rows[5].event_id, "log:unknown:stdout:1"])
    await store.delete_events([])
    assert sorted(line.sequence_num for line in (await store.page(*job.ids)).logs) == [1, 2, 3, 4, 6, 7, 8, 9]


async def test_deleted_lines_can_be_inserted_again(store: LogStore) -> None:
    job = Job()
    await store.insert([job.row(0)])
    await store.delete_workflow(job.user_id, job.workflow_id)
    assert await store.insert([job.row(0)]) == 1
    assert await store.count(*job.ids) == 1


# --- retention ------------------------------------------------------------------------------------


async def test_expired_lines_are_hidden_at_once_and_removed_by_ttl(store: LogStore, engine: Any) -> None:
    job = Job()
    past, future = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(days=30)
    await store.insert([job.row(0, expires_at=past), job.row(1, expires_at=future), job.row(2)])
    assert [line.sequence_num for line in (await store.page(*job.ids)).logs] == [2, 1]
    assert await store.count(*job.ids) == 2
    engine.raw_query("OPTIMIZE TABLE job_logs FINAL")
    stored = raw(engine, "SELECT sequence_num FROM job_logs WHERE job_id = {j:UUID} ORDER BY sequence_num",
                 j=str(job.job_id))
    assert [int(r["sequence_num"]) for r in stored] == [1, 2]


# --- construction ---------------------------------------------------------------------------------


def test_create_log_store_picks_the_configured_backend(chdb_path: str) -> None:
    assert isinstance(create_log_store(ClickHouseConfig(backend="chdb", chdb_path=chdb_path)), ChdbLogStore)
    assert isinstance(create_log_store(ClickHouseConfig(backend="http")), HttpLogStore)


def test_lone_surrogates_in_messages_are_replaced() -> None:
    row = Job().row(0, "bad \udc80 byte")
    assert row.message == "bad \ufffd byte"


async def test_a_second_data_directory_in_one_process_is_unavailable(
        engine: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # `engine` keeps chdb open on the suite's directory; chdb serves one directory per process.
    other = ChdbLogStore(str(tmp_path_factory.mktemp("other-chdb")))
    with pytest.raises(Unavailable):
        await other.count(*Job().ids)
    assert await other.ping() is False
