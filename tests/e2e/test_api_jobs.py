"""Jobs over real HTTP: manual runs (idempotent, ownership-checked), listing with filters, reading
one job and its caching header (reference §2.2; SPEC §5.4)."""

from __future__ import annotations

from typing import Any
from uuid import UUID


async def _schedule(user: Any, workflow_id: UUID, key: str | None = None) -> Any:
    return await user.client.post(f"/workflows/{workflow_id}/jobs/schedule", headers=user.keyed(key))


async def test_manual_run_creates_a_pending_manual_job_due_now(api: Any, api_user: Any, db: Any) -> None:
    workflow_id = await api.create_workflow(api_user)
    response = await _schedule(api_user, workflow_id)
    assert response.status_code == 201, response.text
    job_id = UUID(response.json()["id"])
    row = await db.fetchrow(
        "SELECT status::text AS status, trigger::text AS trigger, "
        "scheduled_at <= now() AT TIME ZONE 'utc' AS due FROM jobs WHERE id = $1",
        job_id,
    )
    assert dict(row) == {"status": "PENDING", "trigger": "MANUAL", "due": True}


async def test_same_idempotency_key_returns_the_same_job(api: Any, api_user: Any, db: Any) -> None:
    workflow_id = await api.create_workflow(api_user)
    first = await _schedule(api_user, workflow_id, key="run-1")
    again = await _schedule(api_user, workflow_id, key="run-1")
    assert first.json()["id"] == again.json()["id"]
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", workflow_id) == 1
    other = await _schedule(api_user, workflow_id, key="run-2")
    assert other.json()["id"] != first.json()["id"]


async def test_manual_run_of_a_terminated_workflow_is_412(api: Any, api_user: Any) -> None:
    workflow_id = await api.create_workflow(api_user)
    await api_user.client.patch(f"/workflows/{workflow_id}", headers=api_user.mutating())
    assert (await _schedule(api_user, workflow_id)).status_code == 412


async def test_manual_run_of_an_unknown_workflow_is_404(api_user: Any) -> None:
    response = await _schedule(api_user, UUID("01a228c1-7af3-7384-945a-585c3c65dea8"))
    assert response.status_code == 404


async def test_job_listing_pages_and_filters(api: Any, api_user: Any, db: Any) -> None:
    workflow_id = await api.create_workflow(api_user)
    ids = [UUID((await _schedule(api_user, workflow_id)).json()["id"]) for _ in range(11)]
    await db.execute("UPDATE jobs SET status = 'COMPLETED' WHERE id = $1", ids[0])
    first = (await api_user.client.get(f"/workflows/{workflow_id}/jobs")).json()
    assert [j["id"] for j in first["jobs"]] == [str(i) for i in reversed(ids[1:])]
    assert first["cursor"]
    second = (
        await api_user.client.get(f"/workflows/{workflow_id}/jobs", params={"cursor": first["cursor"]})
    ).json()
    assert [j["id"] for j in second["jobs"]] == [str(ids[0])] and second["cursor"] is None
    completed = await api_user.client.get(f"/workflows/{workflow_id}/jobs", params={"status": "COMPLETED"})
    assert [j["id"] for j in completed.json()["jobs"]] == [str(ids[0])]
    automatic = await api_user.client.get(f"/workflows/{workflow_id}/jobs", params={"trigger": "AUTOMATIC"})
    assert automatic.json() == {"jobs": [], "cursor": None}
    for params in ({"status": "DONE"}, {"trigger": "CRON"}, {"cursor": "%%%"}):
        assert (await api_user.client.get(f"/workflows/{workflow_id}/jobs", params=params)).status_code == 400


async def test_job_is_readable_and_terminal_jobs_are_cacheable(api: Any, api_user: Any, db: Any) -> None:
    workflow_id = await api.create_workflow(api_user)
    job_id = UUID((await _schedule(api_user, workflow_id)).json()["id"])
    pending = await api_user.client.get(f"/workflows/{workflow_id}/jobs/{job_id}")
    assert pending.status_code == 200
    assert pending.json()["status"] == "PENDING" and pending.json()["attempts"] == 0
    assert pending.headers["Cache-Control"] == "no-store"
    await db.execute(
        "UPDATE jobs SET status = 'FAILED', failure_kind = 'USER', last_error_code = 'FailedPrecondition', "
        "last_error_message = 'status 500', completed_at = now() AT TIME ZONE 'utc' WHERE id = $1",
        job_id,
    )
    failed = await api_user.client.get(f"/workflows/{workflow_id}/jobs/{job_id}")
    assert failed.headers["Cache-Control"] == "private, max-age=7200"
    body = failed.json()
    assert (body["status"], body["failure_kind"], body["last_error_message"]) == (
        "FAILED",
        "USER",
        "status 500",
    )
    wrong_workflow = await api.create_workflow(api_user)
    assert (await api_user.client.get(f"/workflows/{wrong_workflow}/jobs/{job_id}")).status_code == 404
