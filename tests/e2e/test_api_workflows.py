"""Workflows over real HTTP: validation limits, idempotency, outbox rows, lifecycle routes and
listing (checklist items 1, 9-15, 32-35, 59).  No workers run here: assertions stop at what the API
and the database do (outbox rows, build status, generations)."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest


async def _post(user: Any, body: dict[str, Any], key: str | None = None) -> Any:
    return await user.client.post("/workflows", json=body, headers=user.keyed(key))


async def _outbox(db: Any, workflow_id: UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT topic, kafka_key, event_key, payload FROM outbox_events "
        "WHERE kafka_key = $1 ORDER BY created_at, id",
        str(workflow_id),
    )
    return [dict(r) for r in rows]


# -- item 1: Idempotency-Key ------------------------------------------------------------------------


async def test_mutations_without_idempotency_key_are_400(api: Any, api_user: Any) -> None:
    workflow_id = await api.create_workflow(api_user)
    update = {k: v for k, v in api.heartbeat_body().items() if k != "kind"}
    for method, path, body in [
        ("POST", "/workflows", api.heartbeat_body()),
        ("PUT", f"/workflows/{workflow_id}", update),
        ("POST", f"/workflows/{workflow_id}/jobs/schedule", None),
    ]:
        for headers in (api_user.mutating(), api_user.mutating(**{"Idempotency-Key": ""})):
            response = await api_user.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 400, f"{method} {path}: {response.text}"
            assert "Idempotency-Key" in response.json()["error"]["message"]


# -- items 9-13: validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "status"), [(0, 400), (10081, 400), (1, 201), (10080, 201)])
async def test_interval_bounds(api: Any, api_user: Any, interval: int, status: int) -> None:
    response = await _post(api_user, api.heartbeat_body(interval=interval))
    assert response.status_code == status, response.text
    if status == 400:
        assert "interval" in response.json()["error"]["message"]


@pytest.mark.parametrize(("value", "status"), [(2, 400), (101, 400), (3, 201), (100, 201)])
async def test_max_consecutive_failures_bounds(api: Any, api_user: Any, value: int, status: int) -> None:
    response = await _post(api_user, api.heartbeat_body(max_consecutive_job_failures_allowed=value))
    assert response.status_code == status, response.text
    if status == 400:
        assert "max_consecutive_job_failures_allowed" in response.json()["error"]["message"]


async def test_log_retention_defaults_per_kind(api: Any, api_user: Any) -> None:
    container = await api.create_workflow(api_user, api.container_body())
    assert (await api_user.client.get(f"/workflows/{container}")).json()["log_retention"] is True
    heartbeat = await api.create_workflow(api_user, api.heartbeat_body())
    assert (await api_user.client.get(f"/workflows/{heartbeat}")).json()["log_retention"] is False
    rejected = await _post(api_user, api.heartbeat_body(log_retention=True))
    assert rejected.status_code == 400
    assert "log_retention" in rejected.json()["error"]["message"]


async def test_log_retention_may_be_a_duration(api: Any, api_user: Any) -> None:
    workflow_id = await api.create_workflow(api_user, api.container_body(log_retention="168h"))
    body = (await api_user.client.get(f"/workflows/{workflow_id}")).json()
    assert body["log_retention"] is True
    assert body["log_retention_ttl"] == "168h0m0s"


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"cmd": ["echo"]}, 400, "payload.image"),
        ({"image": "busybox", "cmd": ["echo", 1]}, 400, "payload.cmd"),
        ({"image": "busybox", "env": {"A": 1}}, 400, "payload.env"),
        ({"image": "busybox", "timeout": "2h"}, 412, "payload.timeout"),
        ({"image": "busybox", "timeout": "1h"}, 201, None),
    ],
)
async def test_container_payload_validation(
    api: Any, api_user: Any, payload: dict[str, Any], status: int, field: str | None
) -> None:
    response = await _post(api_user, api.container_body(payload=json.dumps(payload)))
    assert response.status_code == status, response.text
    if field:
        assert field in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"expected_status_code": 200}, 400, "payload.endpoint"),
        ({"endpoint": "http://x", "expected_status_code": 99}, 400, "payload.expected_status_code"),
        ({"endpoint": "http://x", "expected_status_code": 600}, 400, "payload.expected_status_code"),
        ({"endpoint": "http://x", "timeout": "6m"}, 412, "payload.timeout"),
        ({"endpoint": "http://x", "timeout": "5m"}, 201, None),
    ],
)
async def test_heartbeat_payload_validation(
    api: Any, api_user: Any, payload: dict[str, Any], status: int, field: str | None
) -> None:
    response = await _post(api_user, api.heartbeat_body(payload=json.dumps(payload)))
    assert response.status_code == status, response.text
    if field:
        assert field in response.json()["error"]["message"]


async def test_malformed_bodies_are_400_naming_the_field(api: Any, api_user: Any) -> None:
    cases = [
        ({**api.heartbeat_body(), "payload": "{not json"}, "invalid payload format"),
        ({**api.heartbeat_body(), "kind": "CRON"}, "kind"),
        ({**api.heartbeat_body(), "interval": "5"}, "interval"),
        ({k: v for k, v in api.heartbeat_body().items() if k != "name"}, "name is required"),
    ]
    for body, fragment in cases:
        response = await _post(api_user, body)
        assert response.status_code == 400, response.text
        assert fragment in response.json()["error"]["message"]
    raw = await api_user.client.post(
        "/workflows", content=b"{broken", headers={**api_user.keyed(), "Content-Type": "application/json"}
    )
    assert raw.status_code == 400
    assert raw.json() == {"error": {"code": "invalid_argument", "message": "invalid request body"}}


# -- items 14-15: idempotency and the BUILD outbox row ------------------------------------------------


async def test_new_workflow_is_queued_at_generation_1_with_one_build_outbox_row(
    api: Any, api_user: Any, db: Any
) -> None:
    workflow_id = await api.create_workflow(api_user)
    body = (await api_user.client.get(f"/workflows/{workflow_id}")).json()
    assert body["build_status"] == "QUEUED" and body["generation"] == 1
    rows = await _outbox(db, workflow_id)
    assert len(rows) == 1
    assert rows[0]["topic"] == "workflows"
    assert rows[0]["event_key"] == f"workflow:{workflow_id}:BUILD:1"
    assert rows[0]["payload"]["action"] == "BUILD"


async def test_replayed_create_returns_same_id_and_writes_nothing_more(
    api: Any, api_user: Any, db: Any
) -> None:
    body = api.heartbeat_body()
    first = await _post(api_user, body, key="create-1")
    replay = await _post(api_user, body, key="create-1")
    assert first.status_code == replay.status_code == 201
    assert first.json()["id"] == replay.json()["id"]
    count = await db.fetchval("SELECT count(*) FROM workflows WHERE user_id = $1", api_user.user_id)
    assert count == 1
    assert len(await _outbox(db, UUID(first.json()["id"]))) == 1
    conflict = await _post(api_user, {**body, "interval": 7}, key="create-1")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "already_exists"


async def test_idempotency_keys_are_scoped_per_user(api: Any, api_user: Any, other_user: Any) -> None:
    body = api.heartbeat_body()
    mine = await _post(api_user, body, key="shared-key")
    theirs = await _post(other_user, body, key="shared-key")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]


# -- items 32-35: terminate, delete, update ------------------------------------------------------------


async def test_patch_terminates_idempotently_with_one_terminate_event(
    api: Any, api_user: Any, db: Any
) -> None:
    workflow_id = await api.create_workflow(api_user)
    for _ in range(2):
        response = await api_user.client.patch(f"/workflows/{workflow_id}", headers=api_user.mutating())
        assert response.status_code == 204
    body = (await api_user.client.get(f"/workflows/{workflow_id}")).json()
    assert body["terminated_at"] is not None
    keys = [r["event_key"] for r in await _outbox(db, workflow_id)]
    assert keys.count(f"workflow:{workflow_id}:TERMINATE:1") == 1


async def test_delete_requires_termination_then_removes_the_row(api: Any, api_user: Any, db: Any) -> None:
    workflow_id = await api.create_workflow(api_user)
    active = await api_user.client.delete(f"/workflows/{workflow_id}", headers=api_user.mutating())
    assert active.status_code == 412
    assert active.json()["error"]["code"] == "failed_precondition"
    await api_user.client.patch(f"/workflows/{workflow_id}", headers=api_user.mutating())
    deleted = await api_user.client.delete(f"/workflows/{workflow_id}", headers=api_user.mutating())
    assert deleted.status_code == 204
    assert (await api_user.client.get(f"/workflows/{workflow_id}")).status_code == 404
    keys = [r["event_key"] for r in await _outbox(db, workflow_id)]
    assert f"workflow:{workflow_id}:DELETE" in keys


async def test_delete_with_a_running_job_is_412(api: Any, api_user: Any, db: Any) -> None:
    workflow_id = await api.create_workflow(api_user)
    job = await api_user.client.post(f"/workflows/{workflow_id}/jobs/schedule", headers=api_user.keyed())
    await db.execute("UPDATE jobs SET status = 'RUNNING' WHERE id = $1", UUID(job.json()["id"]))
    await api_user.client.patch(f"/workflows/{workflow_id}", headers=api_user.mutating())
    response = await api_user.client.delete(f"/workflows/{workflow_id}", headers=api_user.mutating())
    assert response.status_code == 412


def _update_body(create_body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = {k: v for k, v in create_body.items() if k not in ("kind", "log_retention")}
    body.update(changes)
    return body


async def test_interval_change_of_a_built_workflow_reschedules(api: Any, api_user: Any, db: Any) -> None:
    created = api.heartbeat_body(interval=5)
    workflow_id = await api.create_workflow(api_user, created)
    # Stand in for the workflow worker: the build completed and an AUTOMATIC job is pending.
    await db.execute("UPDATE workflows SET build_status = 'COMPLETED' WHERE id = $1", workflow_id)
    pending = await db.fetchval(
        "INSERT INTO jobs (workflow_id, user_id, scheduled_at, trigger) "
        "VALUES ($1, $2, now() AT TIME ZONE 'utc' + interval '5 minutes', 'AUTOMATIC') RETURNING id",
        workflow_id,
        api_user.user_id,
    )
    response = await api_user.client.put(
        f"/workflows/{workflow_id}", json=_update_body(created, interval=9), headers=api_user.keyed()
    )
    assert response.status_code == 204, response.text
    body = (await api_user.client.get(f"/workflows/{workflow_id}")).json()
    assert body["generation"] == 2 and body["interval"] == 9 and body["build_status"] == "COMPLETED"
    assert await db.fetchval("SELECT status::text FROM jobs WHERE id = $1", pending) == "CANCELED"
    keys = [r["event_key"] for r in await _outbox(db, workflow_id)]
    assert f"workflow:{workflow_id}:RESCHEDULE:2" in keys


async def test_image_change_rebuilds_and_reactivates(api: Any, api_user: Any, db: Any) -> None:
    created = api.container_body()
    workflow_id = await api.create_workflow(api_user, created)
    await db.execute(
        "UPDATE workflows SET build_status = 'COMPLETED', consecutive_job_failures_count = 2 WHERE id = $1",
        workflow_id,
    )
    await api_user.client.patch(f"/workflows/{workflow_id}", headers=api_user.mutating())
    new_payload = json.dumps({"image": "local/other:2", "cmd": ["true"]})
    response = await api_user.client.put(
        f"/workflows/{workflow_id}", json=_update_body(created, payload=new_payload), headers=api_user.keyed()
    )
    assert response.status_code == 204, response.text
    body = (await api_user.client.get(f"/workflows/{workflow_id}")).json()
    assert body["generation"] == 2
    assert body["build_status"] == "QUEUED"
    assert body["terminated_at"] is None
    assert body["consecutive_job_failures_count"] == 0
    assert json.loads(body["payload"])["image"] == "local/other:2"
    keys = [r["event_key"] for r in await _outbox(db, workflow_id)]
    assert f"workflow:{workflow_id}:BUILD:2" in keys


async def test_replayed_update_changes_nothing_and_other_body_is_409(
    api: Any, api_user: Any, db: Any
) -> None:
    created = api.heartbeat_body()
    workflow_id = await api.create_workflow(api_user, created)
    update = _update_body(created, name="renamed")
    for _ in range(2):
        response = await api_user.client.put(
            f"/workflows/{workflow_id}", json=update, headers=api_user.keyed("u-1")
        )
        assert response.status_code == 204
    conflict = await api_user.client.put(
        f"/workflows/{workflow_id}", json={**update, "name": "other"}, headers=api_user.keyed("u-1")
    )
    assert conflict.status_code == 409
    assert (await api_user.client.get(f"/workflows/{workflow_id}")).json()["name"] == "renamed"


async def test_update_of_unknown_workflow_is_404(api: Any, api_user: Any) -> None:
    body = _update_body(api.heartbeat_body())
    response = await api_user.client.put(
        "/workflows/01a228c1-7af3-7384-945a-585c3c65dea8", json=body, headers=api_user.keyed()
    )
    assert response.status_code == 404


# -- item 59: listing --------------------------------------------------------------------------------


async def test_list_pages_of_ten_newest_first_with_cursor(api: Any, api_user: Any) -> None:
    ids = [await api.create_workflow(api_user, api.heartbeat_body(name=f"page-{i:02d}")) for i in range(12)]
    first = (await api_user.client.get("/workflows")).json()
    assert [w["id"] for w in first["workflows"]] == [str(i) for i in reversed(ids[2:])]
    assert first["cursor"]
    second = (await api_user.client.get("/workflows", params={"cursor": first["cursor"]})).json()
    assert [w["id"] for w in second["workflows"]] == [str(ids[1]), str(ids[0])]
    assert second["cursor"] is None
    assert "generation" not in first["workflows"][0]
    bad = await api_user.client.get("/workflows", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400


async def test_list_of_a_new_user_is_an_empty_array(api_user: Any) -> None:
    assert (await api_user.client.get("/workflows")).json() == {"workflows": [], "cursor": None}


async def test_list_filters(api: Any, api_user: Any) -> None:
    hb = await api.create_workflow(api_user, api.heartbeat_body(name="alpha probe", interval=5))
    ct = await api.create_workflow(api_user, api.container_body(name="beta job", interval=60))
    gone = await api.create_workflow(api_user, api.heartbeat_body(name="gamma probe", interval=30))
    await api_user.client.patch(f"/workflows/{gone}", headers=api_user.mutating())

    async def ids(**params: Any) -> set[str]:
        response = await api_user.client.get("/workflows", params=params)
        assert response.status_code == 200, response.text
        return {w["id"] for w in response.json()["workflows"]}

    assert await ids(query="PROBE") == {str(hb), str(gone)}
    assert await ids(kind="CONTAINER") == {str(ct)}
    assert await ids(terminated="true") == {str(gone)}
    assert await ids(terminated="false") == {str(hb), str(ct), str(gone)}
    assert await ids(build_status="QUEUED") == {str(hb), str(ct)}
    assert await ids(interval_min=10, interval_max=60) == {str(ct), str(gone)}
    for params in (
        {"kind": "CRON"},
        {"build_status": "DONE"},
        {"terminated": "maybe"},
        {"terminated": "true", "build_status": "QUEUED"},
        {"interval_min": 5},
        {"interval_min": 10, "interval_max": 5},
        {"interval_min": -1, "interval_max": 5},
        {"interval_min": 1, "interval_max": 2**31},
    ):
        response = await api_user.client.get("/workflows", params=params)
        assert response.status_code == 400, params


async def test_list_reflects_the_callers_own_writes_immediately(api: Any, api_user: Any) -> None:
    assert (await api_user.client.get("/workflows")).json()["workflows"] == []  # warms the page cache
    workflow_id = await api.create_workflow(api_user)
    listed = (await api_user.client.get("/workflows")).json()["workflows"]
    assert [w["id"] for w in listed] == [str(workflow_id)]
    await api_user.client.patch(f"/workflows/{workflow_id}", headers=api_user.mutating())
    assert (await api_user.client.get(f"/workflows/{workflow_id}")).json()["terminated_at"] is not None
    assert (await api_user.client.get("/workflows")).json()["workflows"][0]["terminated_at"] is not None
