"""HTTP behaviour through the Serve proxy: CORS (item 63), the body limit (item 64), gzip, JSON
errors for unknown routes and methods, request ids."""

from __future__ import annotations

import gzip
import json
from typing import Any

ALLOWED_ORIGIN = "http://dashboard.example:3001"


async def test_cors_preflight_from_an_allowed_origin_is_204_with_credentialed_headers(api: Any) -> None:
    response = await api.client().options(
        "/workflows",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,idempotency-key,x-csrf-token",
        },
    )
    assert response.status_code == 204
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Max-Age"] == "86400"
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "idempotency-key", "x-csrf-token", "authorization"} <= allowed
    assert {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} <= {
        m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")
    }


async def test_cors_headers_on_responses_to_an_allowed_origin_only(api: Any, api_user: Any) -> None:
    allowed = await api_user.client.get("/users", headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "X-CSRF-Token" in allowed.headers["Access-Control-Expose-Headers"]
    other = await api_user.client.get("/users", headers={"Origin": "http://evil.example"})
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = await api.client().options("/workflows", headers={"Origin": "http://evil.example"})
    assert preflight.status_code == 405
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_bodies_over_the_limit_are_400_invalid_request_body(api: Any, api_user: Any) -> None:
    limit = api.target.settings.server.request_body_limit
    big = json.dumps({**api.heartbeat_body(), "name": "x" * (limit + 1)}).encode()
    for method, path in (("POST", "/workflows"), ("PUT", "/users"), ("PUT", "/notifications")):
        response = await api_user.client.request(
            method, path, content=big, headers={**api_user.keyed(), "Content-Type": "application/json"}
        )
        assert response.status_code == 400, f"{method} {path}"
        assert response.json() == {"error": {"code": "invalid_argument", "message": "invalid request body"}}


async def test_large_responses_are_gzipped_when_asked(api: Any, api_user: Any) -> None:
    for i in range(4):
        await api.create_workflow(api_user, api.heartbeat_body(name=f"gzip-{i}"))
    response = await api_user.client.get("/workflows", headers={"Accept-Encoding": "gzip"})
    assert response.headers.get("Content-Encoding") == "gzip"
    assert len(response.json()["workflows"]) == 4  # httpx decoded it
    plain = await api_user.client.get("/workflows", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(gzip.compress(plain.content)) == plain.content


async def test_unknown_routes_and_methods_get_json_errors(api: Any, api_user: Any) -> None:
    missing = await api_user.client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await api_user.client.delete("/notifications", headers=api_user.mutating())
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_every_response_carries_a_request_id(api: Any) -> None:
    response = await api.client().get("/healthz", headers={"X-Request-ID": "req-e2e-1"})
    assert response.headers["X-Request-ID"]
