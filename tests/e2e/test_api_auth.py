"""Accounts, sessions, CSRF, login rate limiting and API tokens over real HTTP (checklist items
2-8 adapted to SPEC §5.5: CSRF in ``X-CSRF-Token``, missing/wrong → 403)."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import pytest


def _session_cookie(set_cookie: str) -> Any:
    jar: SimpleCookie = SimpleCookie()
    jar.load(set_cookie)
    return jar["session"]


async def test_register_sets_httponly_strict_session_cookie_and_returns_csrf_token(api: Any) -> None:
    client = api.client()
    response = await client.post("/auth/register", json={"email": api.new_email(), "password": api.password})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"user_id", "csrf_token", "expires_at"}
    assert response.headers["X-CSRF-Token"] == body["csrf_token"]
    cookie = _session_cookie(response.headers["set-cookie"])
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["max-age"] == str(int(api.target.settings.server.session_expiry.total_seconds()))
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # SERVER_HOST_URL is http


async def test_register_twice_with_one_email_is_409(api: Any) -> None:
    email = api.new_email()
    await api.register(email)
    again = await api.client().post("/auth/register", json={"email": email, "password": api.password})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_exists"


@pytest.mark.parametrize("password", ["short7!", "x" * 73])
async def test_register_rejects_passwords_outside_8_to_72_characters(api: Any, password: str) -> None:
    response = await api.client().post(
        "/auth/register", json={"email": api.new_email(), "password": password}
    )
    assert response.status_code == 400
    assert "password" in response.json()["error"]["message"]


async def test_register_rejects_a_malformed_email(api: Any) -> None:
    response = await api.client().post(
        "/auth/register", json={"email": "not-an-email", "password": api.password}
    )
    assert response.status_code == 400
    assert "email" in response.json()["error"]["message"]


async def test_passwords_are_stored_as_bcrypt_hashes(api: Any, api_user: Any, db: Any) -> None:
    stored = await db.fetchval("SELECT password FROM users WHERE id = $1", api_user.user_id)
    assert stored.startswith("$2b$10$") and api.password not in stored


async def test_login_unknown_email_is_404_and_wrong_password_is_400(api: Any, api_user: Any) -> None:
    client = api.client()
    unknown = await client.post("/auth/login", json={"email": api.new_email(), "password": api.password})
    assert unknown.status_code == 404
    wrong = await client.post("/auth/login", json={"email": api_user.email, "password": "wrong password"})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "invalid_credentials"


async def test_login_opens_a_new_working_session(api: Any, api_user: Any) -> None:
    client = api.client()
    response = await client.post("/auth/login", json={"email": api_user.email, "password": api.password})
    assert response.status_code == 201, response.text
    assert (await client.get("/users")).json()["email"] == api_user.email
    csrf = response.json()["csrf_token"]
    assert (await client.post("/auth/validate", headers={"X-CSRF-Token": csrf})).status_code == 200


async def test_login_is_rate_limited_per_email_with_retry_after(api: Any, api_user: Any) -> None:
    limit = api.target.settings.server.login_rate_limit
    for _ in range(limit):
        # A new client address each time: only the per-e-mail counter can trip.
        client = api.client()
        bad = await client.post("/auth/login", json={"email": api_user.email, "password": "wrong password"})
        assert bad.status_code == 400
    blocked = await api.client().post("/auth/login", json={"email": api_user.email, "password": api.password})
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "rate_limited"
    assert (
        0
        < int(blocked.headers["Retry-After"])
        <= api.target.settings.server.login_rate_window.total_seconds()
    )


async def test_login_is_rate_limited_per_client_address(api: Any) -> None:
    limit = api.target.settings.server.login_rate_limit
    client = api.client()  # one address, many e-mails
    for _ in range(limit):
        missing = await client.post("/auth/login", json={"email": api.new_email(), "password": api.password})
        assert missing.status_code == 404
    blocked = await client.post("/auth/login", json={"email": api.new_email(), "password": api.password})
    assert blocked.status_code == 429
    assert "Retry-After" in blocked.headers


async def test_logout_expires_the_cookie_and_the_old_session_fails(api: Any, api_user: Any) -> None:
    old_cookie = api_user.client.cookies.get("session")
    response = await api_user.client.post("/auth/logout", headers=api_user.mutating())
    assert response.status_code == 204
    cleared = _session_cookie(response.headers["set-cookie"])
    assert cleared.value == "" and cleared["max-age"] == "0"
    replay = api.client()
    replay.cookies.set("session", old_cookie)
    assert (await replay.get("/users")).status_code == 401
    assert (await replay.post("/auth/validate", headers=api_user.mutating())).status_code == 401


AUTHENTICATED_READS = ["/users", "/workflows", "/notifications", "/analytics", "/auth/tokens"]


@pytest.mark.parametrize("path", AUTHENTICATED_READS)
async def test_reads_without_a_session_are_401(api: Any, path: str) -> None:
    response = await api.client().get(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("path", AUTHENTICATED_READS)
async def test_reads_with_an_unknown_session_are_401(api: Any, path: str) -> None:
    client = api.client()
    client.cookies.set("session", "forged-session-id")
    assert (await client.get(path)).status_code == 401


async def test_reads_need_no_csrf_token(api_user: Any) -> None:
    assert (await api_user.client.get("/users")).status_code == 200
    assert (await api_user.client.get("/workflows")).status_code == 200


async def _mutations(api: Any, user: Any) -> list[tuple[str, str, dict[str, Any] | None]]:
    workflow_id = await api.create_workflow(user)
    return [
        ("POST", "/auth/validate", None),
        ("POST", "/auth/logout", None),
        ("PUT", "/users", {"notification_preference": "ALL"}),
        ("POST", "/workflows", api.heartbeat_body()),
        ("PUT", f"/workflows/{workflow_id}", {k: v for k, v in api.heartbeat_body().items() if k != "kind"}),
        ("PATCH", f"/workflows/{workflow_id}", None),
        ("DELETE", f"/workflows/{workflow_id}", None),
        ("POST", f"/workflows/{workflow_id}/jobs/schedule", None),
        ("PUT", "/notifications", {"ids": ["01a228c1-7b23-7172-ab2a-9af485c2d879"]}),
        ("POST", "/auth/tokens", {"name": "t"}),
    ]


async def test_every_mutation_without_csrf_token_is_403(api: Any, api_user: Any) -> None:
    for method, path, body in await _mutations(api, api_user):
        response = await api_user.client.request(method, path, json=body, headers={"Idempotency-Key": "k"})
        assert response.status_code == 403, f"{method} {path}: {response.text}"
        assert "CSRF" in response.json()["error"]["message"]
    # Nothing happened: the session still works and nothing was terminated.
    assert (await api_user.client.get("/users")).status_code == 200


async def test_every_mutation_with_a_wrong_csrf_token_is_403(
    api: Any, api_user: Any, other_user: Any
) -> None:
    forged = api_user.csrf_token[:-1] + ("0" if api_user.csrf_token[-1] != "0" else "1")
    for token in (forged, other_user.csrf_token, "garbage"):
        for method, path, body in await _mutations(api, api_user):
            headers = {"X-CSRF-Token": token, "Idempotency-Key": "k"}
            response = await api_user.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, f"{method} {path} with {token!r}: {response.text}"


async def test_api_token_authenticates_reads_and_mutations_without_csrf(api: Any, api_user: Any) -> None:
    created = await api_user.client.post("/auth/tokens", json={"name": "ci"}, headers=api_user.mutating())
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    bearer = api.client()
    auth = {"Authorization": f"Bearer {token}"}
    assert (await bearer.get("/users", headers=auth)).json()["email"] == api_user.email
    made = await bearer.post(
        "/workflows", json=api.heartbeat_body(), headers={**auth, "Idempotency-Key": "tok-1"}
    )
    assert made.status_code == 201, made.text
    validated = await bearer.post("/auth/validate", headers=auth)
    assert validated.json() == {"user_id": str(api_user.user_id), "auth_method": "token"}
    listed = (await api_user.client.get("/auth/tokens")).json()["tokens"]
    assert [t["id"] for t in listed] == [created.json()["id"]]
    assert "token" not in listed[0]


async def test_revoked_api_token_is_401(api: Any, api_user: Any) -> None:
    created = (
        await api_user.client.post("/auth/tokens", json={"name": "ci"}, headers=api_user.mutating())
    ).json()
    auth = {"Authorization": f"Bearer {created['token']}"}
    bearer = api.client()
    assert (await bearer.get("/users", headers=auth)).status_code == 200
    revoked = await api_user.client.delete(f"/auth/tokens/{created['id']}", headers=api_user.mutating())
    assert revoked.status_code == 204
    after = await bearer.get("/users", headers=auth)
    assert after.status_code == 401
    assert "revoked" in after.json()["error"]["message"]


async def test_unknown_or_malformed_bearer_credentials_are_401(api: Any) -> None:
    client = api.client()
    for value in ("Bearer cvt_" + "x" * 43, "Bearer nope", "Basic dXNlcjpwYXNz"):
        assert (await client.get("/users", headers={"Authorization": value})).status_code == 401


async def test_api_token_with_expiry_reports_it(api_user: Any) -> None:
    created = await api_user.client.post(
        "/auth/tokens", json={"name": "short", "expires_in": "1h"}, headers=api_user.mutating()
    )
    assert created.status_code == 201
    assert created.json()["expires_at"] is not None
    bad = await api_user.client.post(
        "/auth/tokens", json={"name": "x", "expires_in": "soon"}, headers=api_user.mutating()
    )
    assert bad.status_code == 400


async def test_an_expired_csrf_token_of_the_right_session_is_403(api: Any, api_user: Any) -> None:
    import time

    from domain.csrf import issue_csrf_token

    server = api.target.settings.server
    session_id = api_user.client.cookies.get("session")
    issued = time.time() - server.csrf_expiry.total_seconds() - 60
    stale = issue_csrf_token(server.csrf_hmac_secret.get_secret_value(), session_id, now=issued)
    response = await api_user.client.put(
        "/users", json={"notification_preference": "ALL"}, headers={"X-CSRF-Token": stale}
    )
    assert response.status_code == 403
    fresh = issue_csrf_token(server.csrf_hmac_secret.get_secret_value(), session_id)
    ok = await api_user.client.put(
        "/users", json={"notification_preference": "ALL"}, headers={"X-CSRF-Token": fresh}
    )
    assert ok.status_code == 204
