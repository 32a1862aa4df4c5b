"""CSRF tokens bound to a session (reference §7, SPEC §5.5)."""

from __future__ import annotations

from datetime import timedelta

from domain.csrf import issue_csrf_token, verify_csrf_token

SECRET = "test-secret"
EXPIRY = timedelta(hours=2)
NOW = 1_750_000_000.0


def test_token_has_the_seeds_shape() -> None:
    token = issue_csrf_token(SECRET, "session-a", now=NOW)
    mac, _, issued = token.partition("$")
    assert len(mac) == 64 and int(issued) == int(NOW)


def test_token_verifies_for_its_session_within_the_expiry() -> None:
    token = issue_csrf_token(SECRET, "session-a", now=NOW)
    assert verify_csrf_token(SECRET, "session-a", token, EXPIRY, now=NOW + 7199)


def test_token_of_another_session_is_rejected() -> None:
    token = issue_csrf_token(SECRET, "session-a", now=NOW)
    assert not verify_csrf_token(SECRET, "session-b", token, EXPIRY, now=NOW)


def test_token_with_another_secret_is_rejected() -> None:
    token = issue_csrf_token("other-secret", "session-a", now=NOW)
    assert not verify_csrf_token(SECRET, "session-a", token, EXPIRY, now=NOW)


def test_expired_token_is_rejected() -> None:
    token = issue_csrf_token(SECRET, "session-a", now=NOW)
    assert not verify_csrf_token(SECRET, "session-a", token, EXPIRY, now=NOW + 7201)


def test_token_from_the_future_is_rejected() -> None:
    token = issue_csrf_token(SECRET, "session-a", now=NOW + 3600)
    assert not verify_csrf_token(SECRET, "session-a", token, EXPIRY, now=NOW)


def test_tampered_tokens_are_rejected() -> None:
    token = issue_csrf_token(SECRET, "session-a", now=NOW)
    mac, _, issued = token.partition("$")
    for bad in [
        "",
        None,
        mac,
        f"{mac}${int(issued) + 1}",
        f"{'0' * 64}${issued}",
        f"{mac}$abc",
        f"{mac}$-5",
    ]:
        assert not verify_csrf_token(SECRET, "session-a", bad, EXPIRY, now=NOW), bad
