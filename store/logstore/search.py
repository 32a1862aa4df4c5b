"""Text search helpers: the ``LIKE`` pattern for a user's query and match highlighting.

Search is a case-insensitive substring match of the whole query.  The pattern is bound as a
parameter; escaping here only neutralises ``LIKE``'s own wildcards so ``%`` and ``_`` in a query
match themselves.  Highlighting runs in Python on the returned rows, so marker text never reaches
SQL.
"""

from __future__ import annotations

import re
import secrets

from domain.errors import Invalid

_HIGHLIGHT_TOKEN = re.compile(r"^[0-9A-Za-z]{8,64}$")


def like_pattern(query: str) -> str:
    """``'%<query with \\, % and _ escaped>%'``: matches lines containing ``query`` literally."""
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def new_highlight_token() -> str:
    """A fresh per-response token: 32 random hex characters (reference §8)."""
    return secrets.token_hex(16)


def check_highlight_token(token: str) -> str:
    """Accept only alphanumeric tokens, so a marker can never contain user-controlled text."""
    if not _HIGHLIGHT_TOKEN.match(token):
        raise Invalid("highlight token must be 8-64 letters or digits", code="invalid_highlight_token")
    return token


def highlight(message: str, query: str, token: str) -> str:
    """Wrap every case-insensitive occurrence of ``query`` in ``message`` with the token's markers.

    Occurrences are found left to right without overlap; the matched text keeps its original case.
    """
    if not query:
        return message
    start, end = f"__CV_HL_START_{token}__", f"__CV_HL_END_{token}__"
    pattern = re.compile(re.escape(query), re.IGNORECASE)
    return pattern.sub(lambda match: f"{start}{match.group(0)}{end}", message)
