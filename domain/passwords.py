"""Credentials rules: e-mail format and bcrypt passwords of 8-72 characters (reference §7, item 7).

bcrypt is deliberately slow (tens of ms at the default cost): async callers run :func:`hash_password`
and :func:`verify_password` in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import re

import bcrypt

from domain.errors import Invalid

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 72  # bcrypt only reads 72 bytes
EMAIL_MAX_LENGTH = 100  # users.email VARCHAR(100)
BCRYPT_ROUNDS = 10  # the seed's default cost
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(email: str | None) -> str:
    """Validate an e-mail address and return its canonical (trimmed, lower-case) form."""
    if email is None or not email.strip():
        raise Invalid("email is required")
    value = email.strip().lower()
    if len(value) > EMAIL_MAX_LENGTH:
        raise Invalid(f"email must be at most {EMAIL_MAX_LENGTH} characters")
    if not _EMAIL.match(value):
        raise Invalid("email is not a valid e-mail address")
    return value


def validate_password(password: str | None) -> str:
    """8-72 characters, and at most 72 bytes once UTF-8 encoded (bcrypt's limit)."""
    if password is None or password == "":
        raise Invalid("password is required")
    if len(password) < PASSWORD_MIN_LENGTH:
        raise Invalid(f"password must be at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH or len(password.encode()) > PASSWORD_MAX_LENGTH:
        raise Invalid(f"password must be at most {PASSWORD_MAX_LENGTH} characters (72 bytes)")
    return password


def hash_password(password: str, *, rounds: int = BCRYPT_ROUNDS) -> str:
    """bcrypt hash (``$2b$…``) of a validated password.  Blocking."""
    return bcrypt.hashpw(validate_password(password).encode(), bcrypt.gensalt(rounds)).decode()


def verify_password(password: str, password_hash: str) -> bool:
    """Constant-time check of ``password`` against a bcrypt hash; ``False`` for malformed input.  Blocking."""
    try:
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    except ValueError:
        return False
