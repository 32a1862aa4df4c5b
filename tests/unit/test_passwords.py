"""E-mail and password rules, bcrypt hashing (reference §7; checklist item 7)."""

from __future__ import annotations

import pytest

from domain.errors import Invalid
from domain.passwords import hash_password, normalize_email, validate_password, verify_password


@pytest.mark.parametrize("password", ["", "short", "1234567", "x" * 73, "é" * 40])
def test_passwords_outside_8_to_72_are_invalid(password: str) -> None:
    with pytest.raises(Invalid, match="password"):
        validate_password(password)


@pytest.mark.parametrize("password", ["12345678", "x" * 72, "é" * 36])
def test_passwords_of_8_to_72_are_valid(password: str) -> None:
    assert validate_password(password) == password


def test_hash_is_bcrypt_and_verifies_only_the_right_password() -> None:
    hashed = hash_password("correct horse", rounds=4)
    assert hashed.startswith("$2b$04$")
    assert verify_password("correct horse", hashed)
    assert not verify_password("wrong horse!", hashed)


def test_verify_with_a_malformed_hash_is_false() -> None:
    assert not verify_password("whatever1", "not-a-bcrypt-hash")


def test_email_is_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Alice@Example.COM ") == "alice@example.com"


@pytest.mark.parametrize(
    "email", [None, "", "alice", "alice@", "@example.com", "a b@example.com", "alice@example"]
)
def test_malformed_emails_are_invalid(email: str | None) -> None:
    with pytest.raises(Invalid, match="email"):
        normalize_email(email)


def test_email_longer_than_100_is_invalid() -> None:
    with pytest.raises(Invalid, match="at most 100"):
        normalize_email("a" * 90 + "@example.com")
