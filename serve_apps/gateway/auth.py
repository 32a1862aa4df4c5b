"""Who is calling: session cookies, personal API tokens, CSRF and the session cookie itself
(SPEC §5.5, reference §7).

The gateway resolves credentials itself — a session is one Redis ``GET``, a token one indexed
PostgreSQL read — so an authenticated request still costs exactly one hop to its service.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from domain.config import ServerConfig
from domain.errors import Invalid
from domain.models import Session
from serve_apps.resources import ServiceResources
from store import api_tokens
from store.sessions import LoginRateLimiter, SessionStore

SESSION_COOKIE = "session"
CSRF_HEADER = "X-CSRF-Token"

AuthMethod = Literal["session", "token"]
SameSite = Literal["lax", "strict", "none"]
_SAME_SITE: dict[str, SameSite] = {"LAX": "lax", "STRICT": "strict", "NONE": "none"}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.  ``session_id`` is set for cookie sessions only (CSRF binds to it)."""

    user_id: UUID
    method: AuthMethod
    session_id: str | None = None


class Authenticator:
    """Resolve sessions and bearer tokens, check CSRF, start and end sessions."""

    def __init__(
        self, sessions: SessionStore, limiter: LoginRateLimiter, resources: ServiceResources
    ) -> None:
        self.sessions = sessions
        self.limiter = limiter
        self.resources = resources

    async def from_session(self, session_id: str | None) -> Principal:
        """401 when the cookie is missing, unknown or expired."""
        user_id = await self.sessions.resolve(session_id)
        return Principal(user_id=user_id, method="session", session_id=session_id)

    async def from_bearer(self, token: str) -> Principal:
        """401 for an unknown, revoked or expired token."""
        user_id = await api_tokens.resolve(await self.resources.pool(), token)
        return Principal(user_id=user_id, method="token")

    async def check_login_allowed(self, email: str, client: str | None) -> None:
        """Count a login attempt; 429 once the e-mail or the client address is over the limit."""
        await self.limiter.hit(email, client)

    async def login_succeeded(self, email: str, client: str | None) -> None:
        """Forget the e-mail's failed attempts (and give the address its attempt back)."""
        await self.limiter.succeeded(email, client)

    def check_csrf(self, principal: Principal, token: str | None) -> None:
        """403 unless a cookie session's request carries its CSRF token; tokens need none (a bearer
        credential is never sent by a browser on its own)."""
        if principal.method == "session" and principal.session_id is not None:
            self.sessions.check_csrf(principal.session_id, token)

    async def start_session(self, user_id: UUID) -> Session:
        """A new session (and its CSRF token) for ``user_id``."""
        return await self.sessions.create(user_id)

    async def end_session(self, principal: Principal) -> None:
        """Log a cookie session out; API tokens are revoked through ``DELETE /auth/tokens/{id}``."""
        if principal.session_id is None:
            raise Invalid("logout ends a cookie session; revoke API tokens with DELETE /auth/tokens/{id}")
        await self.sessions.delete(principal.session_id)


@dataclass(frozen=True, slots=True)
class ClientAddressPolicy:
    """Where the caller's address for login rate limiting comes from (ADR 0004).

    * ``trust_forwarded_for`` (``SERVER_TRUST_FORWARDED_FOR``): every request comes through a proxy
      that appends the client to ``X-Forwarded-For`` (``deploy/nginx``), so the header's *last*
      entry — the one that proxy wrote — is the client; without the header it is unknown.
    * otherwise the header is client-controlled and ignored.  Behind Serve's HAProxy ingress
      (``peer_is_proxy``) the peer is HAProxy, which adds no ``X-Forwarded-For``, so the client is
      unknown; behind Serve's default proxy (or plain uvicorn) the peer is the client, except a
      loopback peer, which may be an unconfigured local proxy.

    "Unknown" (``None``) means per-e-mail limiting only: counting every client of a proxy as one
    address would let anyone lock everybody out, and trusting a spoofable header would let anyone
    lock out any address (or escape the limit by rotating it).
    """

    trust_forwarded_for: bool = False
    peer_is_proxy: bool = False

    def address(self, request: Request) -> str | None:
        """The caller's address, or ``None`` when it cannot be known."""
        if self.trust_forwarded_for:
            forwarded = request.headers.get("x-forwarded-for", "")
            return forwarded.split(",")[-1].strip() or None
        if self.peer_is_proxy or request.client is None:
            return None
        peer = request.client.host
        try:
            local_peer = ipaddress.ip_address(peer).is_loopback
        except ValueError:
            local_peer = False
        return None if local_peer else peer


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """Attributes of the ``session`` cookie: ``HttpOnly``, ``Path=/``, ``SameSite`` from
    ``SERVER_SAME_SITE_MODE``, ``Secure`` iff ``SERVER_HOST_URL`` is https, ``Max-Age`` = session
    expiry, ``Domain`` = the host of ``SERVER_HOST_URL`` unless it is localhost/127.0.0.1."""

    max_age: int
    same_site: SameSite
    secure: bool
    domain: str | None

    @classmethod
    def from_config(cls, server: ServerConfig) -> CookiePolicy:
        url = urlsplit(server.host_url)
        host = url.hostname or ""
        local = host in ("localhost", "127.0.0.1", "::1", "") or host.endswith(".localhost")
        same_site = _SAME_SITE[server.same_site_mode]
        return cls(
            max_age=max(1, int(server.session_expiry.total_seconds())),
            same_site=same_site,
            secure=url.scheme == "https",
            domain=None if local else host,
        )

    def set(self, response: Response, session: Session) -> None:
        """Attach the session cookie (and expose its CSRF token as a header)."""
        response.set_cookie(
            SESSION_COOKIE,
            session.session_id,
            max_age=self.max_age,
            path="/",
            domain=self.domain,
            secure=self.secure,
            httponly=True,
            samesite=self.same_site,
        )
        response.headers[CSRF_HEADER] = session.csrf_token

    def clear(self, response: Response) -> None:
        """Expire the session cookie."""
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            domain=self.domain,
            secure=self.secure,
            httponly=True,
            samesite=self.same_site,
        )
