"""What the workflow worker tells users: titles, kinds, payloads and idempotency keys (reference §8).

Every notification is a pure value here; storing it (idempotently, by ``(user_id, idempotency_key)``)
is :mod:`store.notifications`' job.  Keys come from :mod:`domain.event_keys` (reference §3.6):
``notification:JOB:<job>:<title>`` and ``notification:WORKFLOW:<wf>:<title>[:<occurrence>]``.

Build-phase notifications carry the workflow event key as their occurrence so that a *rebuild*
(a new generation) notifies again while a replay of the same event does not.
"""

from __future__ import annotations

import json
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from domain.enums import NotificationKind
from domain.event_keys import job_notification_key, workflow_notification_key


class EntityType(StrEnum):
    """What a notification is about (payload ``entity_type``)."""

    WORKFLOW = "WORKFLOW"
    JOB = "JOB"


class Title(StrEnum):
    """The fixed notification titles of reference §8."""

    BUILD_SKIPPED = "Workflow Build Skipped"
    BUILD_STARTED = "Workflow Build Started"
    BUILD_COMPLETED = "Workflow Build Completed"
    BUILD_FAILED = "Workflow Build Failed"
    JOB_COMPLETED = "Job Execution Completed"
    JOB_FAILED = "Job Execution Failed"
    WORKFLOW_TERMINATED = "Workflow Terminated"
    JOB_CANCELED = "Job Canceled"


class NotificationPayload(BaseModel):
    """The JSON object stored in ``notifications.payload`` (reference §8)."""

    model_config = ConfigDict(frozen=True)

    title: str
    message: str
    entity_id: str
    entity_type: EntityType
    action_url: str


class NotificationDraft(BaseModel):
    """A notification ready to be created idempotently for ``user_id``."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    kind: NotificationKind
    payload: NotificationPayload
    idempotency_key: str

    def payload_json(self) -> str:
        """The payload as the JSON object text stored in the table."""
        return json.dumps(self.payload.model_dump(mode="json"), separators=(",", ":"))


def workflow_url(workflow_id: str) -> str:
    return f"/workflows/{workflow_id}"


def job_url(workflow_id: str, job_id: str) -> str:
    return f"/workflows/{workflow_id}/jobs/{job_id}"


def _workflow_draft(
    user_id: str, workflow_id: str, kind: NotificationKind, title: Title, message: str, occurrence: str | None
) -> NotificationDraft:
    return NotificationDraft(
        user_id=user_id,
        kind=kind,
        payload=NotificationPayload(
            title=title.value,
            message=message,
            entity_id=workflow_id,
            entity_type=EntityType.WORKFLOW,
            action_url=workflow_url(workflow_id),
        ),
        idempotency_key=workflow_notification_key(workflow_id, title.value, occurrence),
    )


def _job_draft(
    user_id: str, workflow_id: str, job_id: str, kind: NotificationKind, title: Title, message: str
) -> NotificationDraft:
    return NotificationDraft(
        user_id=user_id,
        kind=kind,
        payload=NotificationPayload(
            title=title.value,
            message=message,
            entity_id=job_id,
            entity_type=EntityType.JOB,
            action_url=job_url(workflow_id, job_id),
        ),
        idempotency_key=job_notification_key(job_id, title.value),
    )


def build_skipped(user_id: str, workflow_id: str, name: str, event_key: str) -> NotificationDraft:
    """HEARTBEAT (and RAY) workflows have nothing to build."""
    return _workflow_draft(
        user_id, workflow_id, NotificationKind.WEB_INFO, Title.BUILD_SKIPPED,
        f"Workflow '{name}' needs no build step and is ready to run.", event_key,
    )


def build_started(user_id: str, workflow_id: str, name: str, event_key: str) -> NotificationDraft:
    return _workflow_draft(
        user_id, workflow_id, NotificationKind.WEB_INFO, Title.BUILD_STARTED,
        f"Build of workflow '{name}' has started.", event_key,
    )


def build_completed(user_id: str, workflow_id: str, name: str, event_key: str) -> NotificationDraft:
    return _workflow_draft(
        user_id, workflow_id, NotificationKind.WEB_SUCCESS, Title.BUILD_COMPLETED,
        f"Workflow '{name}' was built successfully and is ready to run.", event_key,
    )


def build_failed(user_id: str, workflow_id: str, name: str, event_key: str, reason: str) -> NotificationDraft:
    return _workflow_draft(
        user_id, workflow_id, NotificationKind.WEB_ALERT, Title.BUILD_FAILED,
        f"Build of workflow '{name}' failed: {reason}", event_key,
    )


def job_completed(user_id: str, workflow_id: str, job_id: str, name: str) -> NotificationDraft:
    return _job_draft(
        user_id, workflow_id, job_id, NotificationKind.WEB_SUCCESS, Title.JOB_COMPLETED,
        f"A job of workflow '{name}' completed successfully.",
    )


def job_failed(
    user_id: str, workflow_id: str, job_id: str, name: str, error_message: str = ""
) -> NotificationDraft:
    detail = f": {error_message}" if error_message else "."
    return _job_draft(
        user_id, workflow_id, job_id, NotificationKind.WEB_ERROR, Title.JOB_FAILED,
        f"A job of workflow '{name}' failed{detail}",
    )


def job_canceled(user_id: str, workflow_id: str, job_id: str, name: str) -> NotificationDraft:
    return _job_draft(
        user_id, workflow_id, job_id, NotificationKind.WEB_INFO, Title.JOB_CANCELED,
        f"A job of workflow '{name}' was canceled.",
    )


def terminated_after_failures(
    user_id: str, workflow_id: str, name: str, generation: int, max_failures: int
) -> NotificationDraft:
    """Auto-termination at the consecutive-failure threshold.

    The occurrence is the workflow's generation (the seed used the failing job's id): a replayed
    JOB_FAILED of an already terminated workflow reports the threshold again, and must not raise a
    second alert; a re-activated workflow (a new generation) alerts again when it next fails.
    """
    return _workflow_draft(
        user_id, workflow_id, NotificationKind.WEB_ALERT, Title.WORKFLOW_TERMINATED,
        f"Workflow '{name}' has been terminated after reaching {max_failures} consecutive job failures. "
        "Update the workflow to re-activate it.",
        f"failures:{generation}",
    )


def terminated(user_id: str, workflow_id: str, name: str, event_key: str) -> NotificationDraft:
    """A TERMINATE event was processed; the occurrence is that event's key."""
    return _workflow_draft(
        user_id, workflow_id, NotificationKind.WEB_INFO, Title.WORKFLOW_TERMINATED,
        f"Workflow '{name}' has been terminated.", event_key,
    )
