"""Sessions, CSRF and personal API tokens (SPEC §5.5)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StrictStr

from domain.passwords import EMAIL_MAX_LENGTH, PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH
from serve_apps.schemas.common import ApiModel, OutModel, Timestamp

TOKEN_NAME_MAX_LENGTH = 100


class Credentials(ApiModel):
    """Body of ``POST /auth/register`` and ``POST /auth/login``."""

    email: Annotated[
        StrictStr, Field(min_length=1, max_length=EMAIL_MAX_LENGTH, examples=["ada@example.com"])
    ]
    password: Annotated[
        StrictStr,
        Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH, examples=["correct horse"]),
    ]


class LoginAttempt(OutModel):
    """What the gateway sends the users service to check a login (``client`` is for logs only)."""

    email: str
    password: str = Field(repr=False)


class UserIdentity(OutModel):
    """The user a register/login resolved to."""

    user_id: UUID


class SessionResponse(OutModel):
    """Answer of register/login.  The ``session`` cookie is set as well; send ``csrf_token`` in the
    ``X-CSRF-Token`` header of every mutating request (it is also returned in that header)."""

    user_id: UUID
    csrf_token: str
    expires_at: Timestamp


class ValidateResponse(OutModel):
    """Answer of ``POST /auth/validate``: who the credentials belong to."""

    user_id: UUID
    auth_method: Literal["session", "token"]


class CreateTokenRequest(ApiModel):
    """Body of ``POST /auth/tokens``.  ``expires_in`` is a Go duration (``720h``); ``null`` = never."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=TOKEN_NAME_MAX_LENGTH, examples=["ci"])]
    expires_in: Annotated[StrictStr | None, Field(examples=["720h"])] = None


class ApiTokenOut(OutModel):
    """A personal API token's metadata (the secret is never shown again)."""

    id: UUID
    name: str
    prefix: str
    created_at: Timestamp
    last_used_at: Timestamp | None
    expires_at: Timestamp | None
    revoked_at: Timestamp | None


class CreatedApiToken(ApiTokenOut):
    """A new token: ``token`` is shown exactly once; use it as ``Authorization: Bearer <token>``."""

    token: str


class ApiTokenList(OutModel):
    """The caller's tokens, newest first (revoked ones included, marked by ``revoked_at``)."""

    tokens: list[ApiTokenOut]


class TokenRef(OutModel):
    """Names one of the caller's tokens."""

    token_id: UUID
