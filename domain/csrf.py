"""CSRF tokens bound to a session (reference §7, SPEC §5.5).

token = ``hex(HMAC-SHA256(secret, session_id + issued_at)) + "$" + issued_at`` (unix seconds); valid
while the HMAC matches *this* session and ``issued_at + expiry`` has not passed.  Comparison is
constant-time.  Pure functions: the gateway supplies the secret (``SERVER_CSRF_HMAC_SECRET``) and clock.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta

#: Tokens issued this far in the future are accepted (clock skew between gateway replicas).
CLOCK_SKEW_S = 60


def _mac(secret: str | bytes, session_id: str, issued_at: int) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{session_id}{issued_at}".encode(), hashlib.sha256).hexdigest()


def issue_csrf_token(secret: str | bytes, session_id: str, *, now: float | None = None) -> str:
    """A fresh token for ``session_id``."""
    issued_at = int(time.time() if now is None else now)
    return f"{_mac(secret, session_id, issued_at)}${issued_at}"


def verify_csrf_token(
    secret: str | bytes,
    session_id: str,
    token: str | None,
    expiry: timedelta,
    *,
    now: float | None = None,
) -> bool:
    """Whether ``token`` was issued for ``session_id`` with ``secret`` and has not expired."""
    if not token or not session_id:
        return False
    mac, sep, issued_text = token.partition("$")
    if not sep or not issued_text.isdigit() or len(issued_text) > 12:
        return False
    issued_at = int(issued_text)
    current = time.time() if now is None else now
    if issued_at > current + CLOCK_SKEW_S or issued_at + expiry.total_seconds() < current:
        return False
    return hmac.compare_digest(mac.encode(), _mac(secret, session_id, issued_at).encode())
