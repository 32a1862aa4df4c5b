"""Go-style duration strings (``500ms``, ``1h30m``) <-> :class:`datetime.timedelta`.

The seed configures every interval with Go's ``time.ParseDuration`` syntax, so we accept exactly
that grammar: an optional sign, then one or more ``<decimal><unit>`` pairs with units
``ns, us, µs, ms, s, m, h``; the bare string ``0`` is also valid.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
DURATION_HINT = "a Go duration such as 500ms, 30s, 5m or 1h30m"


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string; raise ``ValueError`` naming the accepted syntax."""
    raw = text.strip()
    if not raw:
        raise ValueError(f"empty duration: expected {DURATION_HINT}")
    if raw in ("0", "+0", "-0"):
        return timedelta(0)
    sign = 1.0
    body = raw
    if body[0] in "+-":
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if not body:
        raise ValueError(f"invalid duration {text!r}: expected {DURATION_HINT}")
    pos = 0
    total = 0.0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}: expected {DURATION_HINT}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return timedelta(seconds=sign * total)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way Go prints durations (``1h30m0s``, ``500ms``, ``0s``)."""
    micros = round(value.total_seconds() * 1_000_000)
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros < 1_000_000:
        if micros % 1000 == 0:
            return f"{sign}{micros // 1000}ms"
        return f"{sign}{micros}us"
    hours, rem = divmod(micros, 3_600_000_000)
    minutes, rem = divmod(rem, 60_000_000)
    seconds = rem / 1_000_000
    sec_text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{sec_text}s"


def _coerce(value: object) -> object:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}")
    if isinstance(value, int | float):
        # Plain numbers are seconds (YAML files sometimes carry them).
        return timedelta(seconds=value)
    raise ValueError(f"expected {DURATION_HINT}")


GoDuration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str, when_used="json-unless-none"),
]
"""A timedelta field that accepts Go duration strings and serialises back to them."""
