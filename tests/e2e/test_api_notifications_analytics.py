"""Notifications and analytics over real HTTP (checklist items 53-58).  The processors and the
workflow worker are not running here, so the test writes their rows through the same repository
functions they use, then reads them back through the API."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from domain.enums import NotificationKind
from domain.event_keys import analytics_job_key, analytics_workflow_key
from domain.ids import uuid7
from store import analytics as analytics_repo
from store import notifications as notifications_repo


async def _notify(db: Any, user_id: UUID, kind: NotificationKind, key: str) -> UUID:
    payload = {
        "title": f"{kind.value} {key}",
        "message": "something happened",
        "entity_id": str(uuid7()),
        "entity_type": "WORKFLOW",
        "action_url": "/workflows/x",
    }
    return await notifications_repo.create(
        db, user_id=user_id, kind=kind, payload=payload, idempotency_key=key
    )


async def _unread(user: Any) -> list[dict[str, Any]]:
    response = await user.client.get("/notifications")
    assert response.status_code == 200, response.text
    return list(response.json()["notifications"])


async def _prefer(user: Any, preference: str) -> None:
    response = await user.client.put(
        "/users", json={"notification_preference": preference}, headers=user.mutating()
    )
    assert response.status_code == 204, response.text


async def test_preference_update_is_validated_and_reflected(api_user: Any) -> None:
    assert (await api_user.client.get("/users")).json()["notification_preference"] == "ALERTS"
    for bad in ({"notification_preference": "SOME"}, {}):
        response = await api_user.client.put("/users", json=bad, headers=api_user.mutating())
        assert response.status_code == 400
        assert "notification_preference" in response.json()["error"]["message"]
    await _prefer(api_user, "NONE")
    assert (await api_user.client.get("/users")).json()["notification_preference"] == "NONE"


async def test_notifications_follow_the_preference_and_are_idempotent(api_user: Any, db: Any) -> None:
    alert = await _notify(db, api_user.user_id, NotificationKind.WEB_ALERT, "n-alert")
    again = await _notify(db, api_user.user_id, NotificationKind.WEB_ALERT, "n-alert")
    assert alert == again
    info = await _notify(db, api_user.user_id, NotificationKind.WEB_INFO, "n-info")
    listed = await _unread(api_user)  # default preference ALERTS: alerts only
    assert [n["id"] for n in listed] == [str(alert)]
    assert json.loads(listed[0]["payload"])["title"] == "WEB_ALERT n-alert"
    assert listed[0]["read_at"] is None and listed[0]["kind"] == "WEB_ALERT"
    await _prefer(api_user, "ALL")
    assert [n["id"] for n in await _unread(api_user)] == [str(info), str(alert)]
    await _prefer(api_user, "NONE")
    assert await _unread(api_user) == []


async def test_mark_read_validates_checks_ownership_and_hides_read_ones(
    api_user: Any, other_user: Any, db: Any
) -> None:
    await _prefer(api_user, "ALL")
    first = await _notify(db, api_user.user_id, NotificationKind.WEB_SUCCESS, "n-1")
    second = await _notify(db, api_user.user_id, NotificationKind.WEB_ERROR, "n-2")
    foreign = await _notify(db, other_user.user_id, NotificationKind.WEB_ALERT, "n-3")
    empty = await api_user.client.put("/notifications", json={"ids": []}, headers=api_user.mutating())
    assert empty.status_code == 400
    not_uuid = await api_user.client.put("/notifications", json={"ids": ["x"]}, headers=api_user.mutating())
    assert not_uuid.status_code == 400
    theirs = await api_user.client.put(
        "/notifications", json={"ids": [str(foreign)]}, headers=api_user.mutating()
    )
    assert theirs.status_code == 404
    mine = await api_user.client.put(
        "/notifications", json={"ids": [str(first)]}, headers=api_user.mutating()
    )
    assert mine.status_code == 204
    assert [n["id"] for n in await _unread(api_user)] == [str(second)]
    # The other user's notification is still unread.
    assert [n["id"] for n in await _unread(other_user)] == [str(foreign)]


async def test_analytics_of_a_new_user_are_zeros(api_user: Any) -> None:
    response = await api_user.client.get("/analytics")
    assert response.json() == {
        "total_workflows": 0,
        "total_jobs": 0,
        "total_joblogs": 0,
        "total_job_execution_duration": 0,
    }


async def test_workflow_analytics_appear_once_built_and_survive_deletion(
    api: Any, api_user: Any, db: Any
) -> None:
    workflow_id = await api.create_workflow(api_user)
    assert (await api_user.client.get(f"/analytics/{workflow_id}")).status_code == 404
    await analytics_repo.apply_workflow_created(
        db,
        event_key=analytics_workflow_key(workflow_id),
        user_id=api_user.user_id,
        workflow_id=workflow_id,
        kind="HEARTBEAT",
    )
    job_key = analytics_job_key(uuid7())
    for _ in range(2):  # a replayed event counts once
        await analytics_repo.apply_job_finished(
            db, event_key=job_key, user_id=api_user.user_id, workflow_id=workflow_id, duration_s=7
        )
    one = await api_user.client.get(f"/analytics/{workflow_id}")
    assert one.json() == {
        "workflow_id": str(workflow_id),
        "total_job_execution_duration": 7,
        "total_jobs": 1,
        "total_joblogs": 0,
    }
    await api_user.client.patch(f"/workflows/{workflow_id}", headers=api_user.mutating())
    assert (
        await api_user.client.delete(f"/workflows/{workflow_id}", headers=api_user.mutating())
    ).status_code == 204
    totals = (await api_user.client.get("/analytics")).json()
    assert totals == {
        "total_workflows": 1,
        "total_jobs": 1,
        "total_joblogs": 0,
        "total_job_execution_duration": 7,
    }
