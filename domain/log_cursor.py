"""The opaque cursor of job-log pages (reference §2.1): the sort key of the first row of the next page.

Log pages are ordered by ``(sequence_num, stream, event_id)`` (``sequence_num`` descending for the
newest-first view, ascending for downloads).  A cursor names the *next* row, and the next page starts
at that row inclusively, so consecutive pages neither overlap nor leave gaps.  On the wire it is
URL-safe base64 of compact JSON ``{"sequence_num":N,"stream":"stdout","event_id":"…"}``; the seed's
standard-alphabet, padded spelling is accepted too.
"""

from __future__ import annotations

import base64
import binascii
import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.enums import LogStream
from domain.errors import Invalid

#: Longer tokens are rejected before decoding: a real cursor is well under 200 characters.
MAX_CURSOR_LENGTH = 1024
_UINT32_MAX = 2**32 - 1


class LogCursor(BaseModel):
    """Position of one log row in page order; pages start at this row (inclusive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sequence_num: int = Field(ge=0, le=_UINT32_MAX)
    stream: LogStream
    event_id: str = Field(min_length=1, max_length=512)

    def encode(self) -> str:
        """The opaque, URL-safe token handed to clients (no padding)."""
        raw = json.dumps(self.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False)
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> LogCursor:
        """Parse a token made by :meth:`encode` (or the seed's std-base64 form).

        Raises :class:`domain.errors.Invalid` for anything else, so the gateway answers 400.
        """
        if not token or len(token) > MAX_CURSOR_LENGTH:
            raise Invalid("invalid cursor", code="invalid_cursor")
        text = token.strip().replace("+", "-").replace("/", "_").rstrip("=")
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
            return cls.model_validate_json(raw)
        except (binascii.Error, ValueError, ValidationError) as exc:
            raise Invalid("invalid cursor", code="invalid_cursor") from exc
