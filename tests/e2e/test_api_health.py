"""Liveness, readiness and OpenAPI of the deployed app (SPEC §5.1, §7)."""

from __future__ import annotations

from typing import Any

import httpx


async def test_healthz_answers_ok(api: Any) -> None:
    response = await api.client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_postgres_and_redis_ok(api: Any) -> None:
    response = await api.client().get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_docs_page_is_served(api: Any) -> None:
    response = await api.client().get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


async def test_openapi_documents_400_not_422_and_every_route(api: Any) -> None:
    spec = (await api.client().get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        "/auth/register": {"post"},
        "/auth/login": {"post"},
        "/auth/logout": {"post"},
        "/auth/validate": {"post"},
        "/auth/tokens": {"post", "get"},
        "/auth/tokens/{token_id}": {"delete"},
        "/users": {"get", "put"},
        "/workflows": {"get", "post"},
        "/workflows/{workflow_id}": {"get", "put", "patch", "delete"},
        "/workflows/{workflow_id}/jobs": {"get"},
        "/workflows/{workflow_id}/jobs/schedule": {"post"},
        "/workflows/{workflow_id}/jobs/{job_id}": {"get"},
        "/notifications": {"get", "put"},
        "/analytics": {"get"},
        "/analytics/{workflow_id}": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], f"{method} {path}"
            if method != "get" or path.startswith("/workflows"):
                assert "400" in operation["responses"], f"{method} {path}"


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _check(spec: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> None:
    """A small structural validator: object keys exactly as documented (all present), types match."""
    schema = _resolve(spec, schema)
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                _check(spec, option, value, where)
                return
            except AssertionError as err:
                errors.append(str(err))
        raise AssertionError(f"{where}: {value!r} matches no option: {errors}")
    kind = schema.get("type")
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if kind == "object" and "properties" in schema:
        assert isinstance(value, dict), f"{where}: expected an object"
        assert set(value) == set(schema["properties"]), (
            f"{where}: keys {set(value)} != {set(schema['properties'])}"
        )
        for key, sub in schema["properties"].items():
            _check(spec, sub, value[key], f"{where}.{key}")
    elif kind == "array":
        assert isinstance(value, list), f"{where}: expected an array"
        for index, item in enumerate(value):
            _check(spec, schema["items"], item, f"{where}[{index}]")
    elif kind == "string":
        assert isinstance(value, str), f"{where}: expected a string, got {value!r}"
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: expected an integer"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{where}: expected a boolean"
    elif kind == "null":
        assert value is None, f"{where}: expected null"


def _response_schema(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    return spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]


async def test_real_responses_match_the_openapi_schemas(api: Any, api_user: Any) -> None:
    client: httpx.AsyncClient = api_user.client
    spec = (await client.get("/openapi.json")).json()
    workflow_id = await api.create_workflow(api_user)
    schedule = await client.post(f"/workflows/{workflow_id}/jobs/schedule", headers=api_user.keyed())
    job_id = schedule.json()["id"]
    token = await client.post("/auth/tokens", json={"name": "schema"}, headers=api_user.mutating())
    cases = [
        ("/workflows/{workflow_id}/jobs/schedule", "post", schedule),
        ("/auth/tokens", "post", token),
        ("/users", "get", await client.get("/users")),
        ("/workflows", "get", await client.get("/workflows")),
        ("/workflows/{workflow_id}", "get", await client.get(f"/workflows/{workflow_id}")),
        ("/workflows/{workflow_id}/jobs", "get", await client.get(f"/workflows/{workflow_id}/jobs")),
        (
            "/workflows/{workflow_id}/jobs/{job_id}",
            "get",
            await client.get(f"/workflows/{workflow_id}/jobs/{job_id}"),
        ),
        ("/notifications", "get", await client.get("/notifications")),
        ("/analytics", "get", await client.get("/analytics")),
        ("/auth/tokens", "get", await client.get("/auth/tokens")),
        ("/auth/validate", "post", await client.post("/auth/validate", headers=api_user.mutating())),
        ("/readyz", "get", await client.get("/readyz")),
    ]
    for path, method, response in cases:
        assert response.status_code in (200, 201), f"{method} {path}: {response.text}"
        schema = _response_schema(spec, path, method, response.status_code)
        _check(spec, schema, response.json(), f"{method.upper()} {path}")
    missing = await client.get(f"/analytics/{workflow_id}")
    assert missing.status_code == 404
    _check(spec, _response_schema(spec, "/analytics/{workflow_id}", "get", 404), missing.json(), "404 body")
