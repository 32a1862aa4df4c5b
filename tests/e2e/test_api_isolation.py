"""Ownership everywhere (checklist item 60, SPEC §5.4): another user can never read, change, list,
schedule or get analytics for a workflow that is not theirs — 404 (or an empty list), never 403 and
never data — and the owner's workflow is untouched afterwards."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from domain.event_keys import analytics_workflow_key
from store import analytics as analytics_repo


async def test_a_foreign_workflow_is_invisible_and_untouchable_on_every_route(
    api: Any, api_user: Any, other_user: Any, db: Any
) -> None:
    created = api.heartbeat_body(name="owned")
    workflow_id = await api.create_workflow(api_user, created)
    job_id = UUID(
        (
            await api_user.client.post(f"/workflows/{workflow_id}/jobs/schedule", headers=api_user.keyed())
        ).json()["id"]
    )
    await analytics_repo.apply_workflow_created(
        db,
        event_key=analytics_workflow_key(workflow_id),
        user_id=api_user.user_id,
        workflow_id=workflow_id,
        kind="HEARTBEAT",
    )
    update = {k: v for k, v in created.items() if k != "kind"} | {"name": "hijacked"}
    intruder = other_user.client
    not_found = [
        ("GET", f"/workflows/{workflow_id}", None, {}),
        ("PUT", f"/workflows/{workflow_id}", update, other_user.keyed()),
        ("PATCH", f"/workflows/{workflow_id}", None, other_user.mutating()),
        ("DELETE", f"/workflows/{workflow_id}", None, other_user.mutating()),
        ("POST", f"/workflows/{workflow_id}/jobs/schedule", None, other_user.keyed()),
        ("GET", f"/workflows/{workflow_id}/jobs/{job_id}", None, {}),
        ("GET", f"/analytics/{workflow_id}", None, {}),
    ]
    for method, path, body, headers in not_found:
        response = await intruder.request(method, path, json=body, headers=headers)
        assert response.status_code == 404, f"{method} {path}: {response.status_code} {response.text}"
        assert str(workflow_id) not in response.text
    jobs = await intruder.get(f"/workflows/{workflow_id}/jobs")
    assert jobs.status_code == 200 and jobs.json() == {"jobs": [], "cursor": None}
    assert (await intruder.get("/workflows")).json() == {"workflows": [], "cursor": None}
    assert (await intruder.get("/analytics")).json()["total_workflows"] == 0

    # The owner sees everything unchanged: not renamed, not terminated, one job only.
    mine = (await api_user.client.get(f"/workflows/{workflow_id}")).json()
    assert mine["name"] == "owned" and mine["terminated_at"] is None and mine["generation"] == 1
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", workflow_id) == 1
    assert [w["id"] for w in (await api_user.client.get("/workflows")).json()["workflows"]] == [
        str(workflow_id)
    ]


async def test_a_foreign_api_token_cannot_be_revoked(api_user: Any, other_user: Any) -> None:
    created = (
        await api_user.client.post("/auth/tokens", json={"name": "mine"}, headers=api_user.mutating())
    ).json()
    response = await other_user.client.delete(f"/auth/tokens/{created['id']}", headers=other_user.mutating())
    assert response.status_code == 404
    assert (await other_user.client.get("/auth/tokens")).json() == {"tokens": []}
    tokens = (await api_user.client.get("/auth/tokens")).json()["tokens"]
    assert tokens[0]["revoked_at"] is None


async def test_a_token_only_acts_for_its_owner(api: Any, api_user: Any, other_user: Any) -> None:
    workflow_id = await api.create_workflow(api_user)
    token = (
        await other_user.client.post("/auth/tokens", json={"name": "t"}, headers=other_user.mutating())
    ).json()
    bearer = api.client()
    response = await bearer.get(
        f"/workflows/{workflow_id}", headers={"Authorization": f"Bearer {token['token']}"}
    )
    assert response.status_code == 404
