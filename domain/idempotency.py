"""Idempotency of workflow create/update (reference §6.2) as pure functions.

A request is identified by ``(user_id, operation, key)`` and fingerprinted by :func:`request_hash`, the
sha256 of the canonical (sorted-key, compact) JSON of its semantic fields.  :func:`decide` says what
to do when a key row may already exist; :func:`raise_for` turns a refusal into the error taxonomy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from domain.enums import IdempotencyStatus
from domain.errors import AlreadyExists, Conflict

#: How long a key is remembered (the seed's hard-coded 24 h).
IDEMPOTENCY_TTL = timedelta(hours=24)

CREATE_WORKFLOW = "create_workflow"


def update_workflow_operation(workflow_id: UUID) -> str:
    """The operation name scoping update keys to one workflow: ``update_workflow:<id>``."""
    return f"update_workflow:{workflow_id}"


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UUIDs/datetimes/enums as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_hash(fields: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of a request's semantic fields."""
    return hashlib.sha256(canonical_json(dict(fields)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What is already recorded for a key."""

    status: IdempotencyStatus
    request_hash: str
    workflow_id: UUID | None
    expires_at: datetime
    #: The stored answer (``{"id": …}`` plus, for updates, what was decided).
    response: dict[str, Any] | None = None


class IdempotencyOutcome(StrEnum):
    """``PROCEED``: run the mutation (no usable row).  ``REPLAY``: answer from the stored result, no side
    effects.  ``MISMATCH``: key reused with a different request (409 AlreadyExists).  ``IN_FLIGHT``:
    another request with this key has not finished (409 Conflict, retryable)."""

    PROCEED = "PROCEED"
    REPLAY = "REPLAY"
    MISMATCH = "MISMATCH"
    IN_FLIGHT = "IN_FLIGHT"


def decide(stored: StoredKey | None, incoming_hash: str, now: datetime) -> IdempotencyOutcome:
    """The decision table of reference §6.2.

    * no row, an expired row (``expires_at <= now``; the cleanup loop may not have run yet) or a
      ``FAILED`` row → ``PROCEED`` (the caller takes the row over);
    * different hash → ``MISMATCH`` (checked before the status, as in the seed);
    * same hash and ``COMPLETED`` → ``REPLAY``;
    * same hash and ``PROCESSING`` → ``IN_FLIGHT``.
    """
    if stored is None or stored.expires_at <= now or stored.status == IdempotencyStatus.FAILED:
        return IdempotencyOutcome.PROCEED
    if stored.request_hash != incoming_hash:
        return IdempotencyOutcome.MISMATCH
    if stored.status == IdempotencyStatus.COMPLETED:
        return IdempotencyOutcome.REPLAY
    return IdempotencyOutcome.IN_FLIGHT


def raise_for(outcome: IdempotencyOutcome) -> None:
    """Raise the error a refusing outcome maps to; return for ``PROCEED`` and ``REPLAY``."""
    if outcome == IdempotencyOutcome.MISMATCH:
        raise AlreadyExists("idempotency key was already used with a different request")
    if outcome == IdempotencyOutcome.IN_FLIGHT:
        raise Conflict("a request with this idempotency key is still being processed")
