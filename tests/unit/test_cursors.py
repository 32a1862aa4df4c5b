"""Pagination cursors (reference §2.1): base64 of ``<id>$<created_at RFC3339Nano>``."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import pytest

from domain.cursors import Cursor, decode_cursor, decode_optional_cursor, encode_cursor, paginate
from domain.errors import Invalid
from domain.ids import uuid7

ROW = UUID("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b")


def test_cursor_is_base64_of_id_dollar_rfc3339nano() -> None:
    cursor = encode_cursor(ROW, datetime(2025, 1, 2, 3, 4, 5, 123400))
    assert base64.b64decode(cursor).decode() == f"{ROW}$2025-01-02T03:04:05.1234Z"


def test_whole_second_has_no_fraction() -> None:
    cursor = encode_cursor(ROW, datetime(2025, 1, 2, 3, 4, 5))
    assert base64.b64decode(cursor).decode().endswith("$2025-01-02T03:04:05Z")


@pytest.mark.parametrize("micro", [0, 1, 10, 123456, 999999, 500000])
def test_cursor_round_trips(micro: int) -> None:
    created = datetime(2024, 12, 31, 23, 59, 59, micro)
    assert decode_cursor(encode_cursor(ROW, created)) == Cursor(ROW, created)


def test_go_cursor_with_nanoseconds_and_offset_decodes_to_naive_utc() -> None:
    raw = f"{ROW}$2025-01-02T05:04:05.123456789+02:00"
    decoded = decode_cursor(base64.b64encode(raw.encode()).decode())
    assert decoded == Cursor(ROW, datetime(2025, 1, 2, 3, 4, 5, 123456))
    assert decoded.created_at.tzinfo is None


@pytest.mark.parametrize("bad", [
    "!!!",
    "bm90LWEtY3Vyc29y",  # "not-a-cursor"
    base64.b64encode(b"not-a-uuid$2025-01-02T03:04:05Z").decode(),
    base64.b64encode(f"{ROW}$yesterday".encode()).decode(),
    base64.b64encode(f"{ROW}".encode()).decode(),
    base64.b64encode(b"\xff\xfe").decode(),
    "YWJj",  # "abc"
])
def test_malformed_cursor_is_invalid(bad: str) -> None:
    with pytest.raises(Invalid, match="cursor"):
        decode_cursor(bad)


def test_empty_cursor_means_first_page() -> None:
    assert decode_optional_cursor(None) is None
    assert decode_optional_cursor("") is None


@dataclass
class Row:
    id: UUID
    created_at: datetime


def test_paginate_cuts_the_extra_row_into_the_next_cursor() -> None:
    rows = [Row(uuid7(), datetime(2025, 1, 1, 0, 0, i)) for i in range(4)]
    page = paginate(rows, 3)
    assert page.items == rows[:3]
    assert page.cursor is not None
    assert decode_cursor(page.cursor) == Cursor(rows[3].id, rows[3].created_at)


def test_paginate_last_page_has_no_cursor() -> None:
    rows = [Row(uuid7(), datetime(2025, 1, 1)) for _ in range(3)]
    page = paginate(rows, 3)
    assert page.items == rows and page.cursor is None
