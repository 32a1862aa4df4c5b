"""The opaque job-log cursor: round trip, URL safety, the seed's spelling, and rejection of junk."""

from __future__ import annotations

import base64
import json

import pytest

from domain.enums import LogStream
from domain.errors import Invalid
from domain.log_cursor import MAX_CURSOR_LENGTH, LogCursor

CURSOR = LogCursor(sequence_num=4_294_967_295, stream=LogStream.STDERR,
                   event_id="log:0190a3b2-0000-7000-8000-000000000001:attempt:2:stderr:7")


def test_encoded_cursor_decodes_to_the_same_position() -> None:
    assert LogCursor.decode(CURSOR.encode()) == CURSOR


def test_encoded_cursor_is_url_safe_without_padding() -> None:
    # Event ids chosen so standard base64 would need '+', '/' and padding.
    for event_id in ("x" * n + "??>>~~" for n in range(6)):
        token = LogCursor(sequence_num=1, stream=LogStream.STDOUT, event_id=event_id).encode()
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert LogCursor.decode(token).event_id == event_id


def test_cursor_payload_is_the_seeds_json_shape() -> None:
    token = CURSOR.encode()
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert json.loads(raw) == {"sequence_num": 4_294_967_295, "stream": "stderr",
                               "event_id": CURSOR.event_id}


def test_seed_standard_base64_with_padding_is_accepted() -> None:
    raw = json.dumps({"sequence_num": 12, "stream": "stdout", "event_id": "log:j:stdout:12???"})
    token = base64.b64encode(raw.encode()).decode()
    assert "=" in token or "/" in token or "+" in token
    assert LogCursor.decode(token) == LogCursor(sequence_num=12, stream=LogStream.STDOUT,
                                                event_id="log:j:stdout:12???")


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not base64 !!",
        "%%%%",
        base64.urlsafe_b64encode(b"\xff\xfe not json").decode(),
        _b64([1, 2, 3]),
        _b64({"sequence_num": 1, "stream": "stdout"}),
        _b64({"sequence_num": -1, "stream": "stdout", "event_id": "e"}),
        _b64({"sequence_num": 2**32, "stream": "stdout", "event_id": "e"}),
        _b64({"sequence_num": 1, "stream": "stdin", "event_id": "e"}),
        _b64({"sequence_num": 1, "stream": "stdout", "event_id": ""}),
        _b64({"sequence_num": 1, "stream": "stdout", "event_id": "e", "extra": 1}),
        "A" * (MAX_CURSOR_LENGTH + 1),
    ],
    ids=["empty", "alphabet", "symbols", "binary", "list", "missing-field", "negative", "overflow",
         "bad-stream", "empty-event-id", "extra-field", "too-long"],
)
def test_bad_cursor_is_invalid(token: str) -> None:
    with pytest.raises(Invalid) as info:
        LogCursor.decode(token)
    assert info.value.code == "invalid_cursor"
