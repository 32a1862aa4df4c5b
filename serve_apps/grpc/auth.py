"""Who calls the gRPC API: ``authorization: Bearer <personal API token>`` metadata.

The tokens are the HTTP API's (``POST /auth/tokens``), resolved by the same
:func:`store.api_tokens.resolve` the gateway uses — one indexed PostgreSQL read — so a revoked or
expired token stops working on both front doors at once.  There are no sessions over gRPC, hence no
CSRF: a bearer credential is never attached by a browser on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from domain.errors import Unauthenticated
from serve_apps.resources import ServiceResources
from store import api_tokens

AUTHORIZATION_KEY = "authorization"


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The token of the ``authorization`` metadata entry; UNAUTHENTICATED when it is missing or
    not ``Bearer <token>`` (the scheme is case-insensitive, as in HTTP)."""
    value = next((v for k, v in metadata if k.lower() == AUTHORIZATION_KEY), None)
    if value is None:
        raise Unauthenticated("authorization metadata is required: 'Bearer <personal API token>'")
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    scheme, _, token = text.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization metadata must be 'Bearer <personal API token>'")
    return token.strip()


class TokenAuthenticator:
    """Resolves the caller of a call from its metadata, with the replica's own PostgreSQL pool."""

    def __init__(self, resources: ServiceResources) -> None:
        self.resources = resources

    async def user_id(self, metadata: Iterable[tuple[str, str | bytes]]) -> UUID:
        """The token owner's id (UNAUTHENTICATED for a missing, unknown, revoked or expired token)."""
        token = bearer_token(metadata)
        return await api_tokens.resolve(await self.resources.pool(), token)
