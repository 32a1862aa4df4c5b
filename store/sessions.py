"""Login sessions, their CSRF tokens and login rate limiting, in Redis (SPEC §5.5, reference §7).

* A session id is an opaque random string (``secrets.token_urlsafe(32)``, the cookie value);
  Redis maps ``session:<id>`` → user id with TTL ``SERVER_SESSION_EXPIRY`` (not sliding, as the
  seed).  Deleting the key logs the session out everywhere.
* The CSRF token is bound to the session by an HMAC (:mod:`domain.csrf`, secret
  ``SERVER_CSRF_HMAC_SECRET``, expiry ``SERVER_CSRF_EXPIRY``); it needs no storage.
* Login attempts are counted per e-mail and per client address in fixed windows
  (``SERVER_LOGIN_RATE_LIMIT`` attempts per ``SERVER_LOGIN_RATE_WINDOW``); a successful login
  forgets the e-mail's count.  Keys hold a sha256 of the e-mail/address, not the value.

Sessions only survive if Redis does not evict them: run Redis with ``noeviction`` or a
``volatile-*`` policy and enough memory (every cache entry also has a TTL, so ``volatile-lru`` would
evict sessions as readily as cache entries; ``noeviction`` is the safe choice for a shared instance).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID

from redis.asyncio import Redis

from domain.config import ServerConfig
from domain.csrf import issue_csrf_token, verify_csrf_token
from domain.errors import PermissionDenied, RateLimited, Unauthenticated
from domain.models import Session

# Give an attempt back without creating (or reviving) a key that has expired.
_DECREMENT_IF_POSITIVE = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
if value > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
"""


def _session_key(session_id: str) -> str:
    return f"session:{session_id}"


class SessionStore:
    """Create, resolve and delete sessions; issue and check their CSRF tokens."""

    def __init__(self, redis: Redis, config: ServerConfig) -> None:
        self._redis = redis
        self._expiry = config.session_expiry
        self._csrf_expiry = config.csrf_expiry
        self._secret = config.csrf_hmac_secret.get_secret_value()

    async def create(self, user_id: UUID) -> Session:
        """Start a session for ``user_id``: a fresh id stored with the session TTL, and its CSRF token."""
        session_id = secrets.token_urlsafe(32)
        ttl = max(1, int(self._expiry.total_seconds()))
        await self._redis.set(_session_key(session_id), str(user_id), ex=ttl)
        return Session(
            session_id=session_id,
            user_id=user_id,
            csrf_token=self.issue_csrf(session_id),
            expires_at=datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=ttl),
        )

    async def resolve(self, session_id: str | None) -> UUID:
        """The user of a live session.  ``Unauthenticated`` (401) when missing, unknown or expired."""
        if not session_id:
            raise Unauthenticated("session not found")
        value = await self._redis.get(_session_key(session_id))
        if value is None:
            raise Unauthenticated("session expired or logged out")
        return UUID(str(value))

    async def delete(self, session_id: str) -> bool:
        """Log out: drop the session.  ``True`` if it existed."""
        return bool(await self._redis.delete(_session_key(session_id)))

    def issue_csrf(self, session_id: str) -> str:
        """A CSRF token bound to ``session_id`` (valid for ``SERVER_CSRF_EXPIRY``)."""
        return issue_csrf_token(self._secret, session_id)

    def check_csrf(self, session_id: str, token: str | None) -> None:
        """``PermissionDenied`` (403) unless ``token`` is a live CSRF token of this session."""
        if not token:
            raise PermissionDenied("missing CSRF token: send it in the X-CSRF-Token header")
        if not verify_csrf_token(self._secret, session_id, token, self._csrf_expiry):
            raise PermissionDenied("invalid or expired CSRF token")


class LoginRateLimiter:
    """Fixed-window counters of login attempts per e-mail and per client address.

    Call :meth:`hit` before checking a password (it counts the attempt and raises ``RateLimited``
    with ``retry_after_s`` once a counter exceeds the limit), and :meth:`succeeded` after a
    successful login.
    """

    def __init__(self, redis: Redis, *, limit: int, window: timedelta) -> None:
        self._redis = redis
        self._limit = limit
        self._window = max(1, int(window.total_seconds()))

    @classmethod
    def from_config(cls, redis: Redis, config: ServerConfig) -> LoginRateLimiter:
        return cls(redis, limit=config.login_rate_limit, window=config.login_rate_window)

    @staticmethod
    def _key(kind: str, value: str) -> str:
        return f"login-attempts:{kind}:{hashlib.sha256(value.strip().lower().encode()).hexdigest()}"

    async def hit(self, email: str, client_address: str | None) -> None:
        """Count one attempt; ``RateLimited`` (429) when the e-mail or the address is over the limit."""
        keys = [self._key("email", email)]
        if client_address:
            keys.append(self._key("address", client_address))
        pipe = self._redis.pipeline(transaction=True)
        for key in keys:
            # SET NX EX starts the window on the first attempt (EXPIRE NX needs Redis 7).
            pipe.set(key, 0, ex=self._window, nx=True)
            pipe.incr(key)
            pipe.ttl(key)
        results = await pipe.execute()
        retry_after = 0
        for index in range(len(keys)):
            count, ttl = results[index * 3 + 1], results[index * 3 + 2]
            if count > self._limit:
                retry_after = max(retry_after, ttl if ttl and ttl > 0 else self._window)
        if retry_after:
            raise RateLimited("too many login attempts, try again later", retry_after_s=float(retry_after))

    async def succeeded(self, email: str, client_address: str | None) -> None:
        """A correct password: forget the e-mail's attempts and give the address its attempt back."""
        await self._redis.delete(self._key("email", email))
        if client_address:
            await self._redis.eval(_DECREMENT_IF_POSITIVE, 1, self._key("address", client_address))
