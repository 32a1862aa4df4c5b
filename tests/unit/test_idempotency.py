"""The idempotency decision of reference §6.2 as a table."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import pytest

from domain.enums import IdempotencyStatus
from domain.errors import AlreadyExists, Conflict
from domain.idempotency import (
    IdempotencyOutcome,
    StoredKey,
    canonical_json,
    decide,
    raise_for,
    request_hash,
    update_workflow_operation,
)

NOW = datetime(2025, 6, 1, 12, 0, 0)
LATER = NOW + timedelta(hours=1)
EARLIER = NOW - timedelta(seconds=1)


def stored(status: IdempotencyStatus, digest: str = "h1", expires_at: datetime = LATER) -> StoredKey:
    return StoredKey(status=status, request_hash=digest, workflow_id=UUID(int=7), expires_at=expires_at)


@pytest.mark.parametrize(("row", "incoming", "outcome"), [
    (None, "h1", IdempotencyOutcome.PROCEED),
    (stored(IdempotencyStatus.COMPLETED), "h1", IdempotencyOutcome.REPLAY),
    (stored(IdempotencyStatus.COMPLETED), "h2", IdempotencyOutcome.MISMATCH),
    (stored(IdempotencyStatus.PROCESSING), "h1", IdempotencyOutcome.IN_FLIGHT),
    (stored(IdempotencyStatus.PROCESSING), "h2", IdempotencyOutcome.MISMATCH),
    (stored(IdempotencyStatus.FAILED), "h1", IdempotencyOutcome.PROCEED),
    (stored(IdempotencyStatus.FAILED), "h2", IdempotencyOutcome.PROCEED),
    (stored(IdempotencyStatus.COMPLETED, expires_at=EARLIER), "h2", IdempotencyOutcome.PROCEED),
    (stored(IdempotencyStatus.COMPLETED, expires_at=NOW), "h1", IdempotencyOutcome.PROCEED),
    (stored(IdempotencyStatus.PROCESSING, expires_at=EARLIER), "h1", IdempotencyOutcome.PROCEED),
])
def test_decision_table(row: StoredKey | None, incoming: str, outcome: IdempotencyOutcome) -> None:
    assert decide(row, incoming, NOW) == outcome


def test_mismatch_is_already_exists_and_in_flight_is_conflict() -> None:
    with pytest.raises(AlreadyExists):
        raise_for(IdempotencyOutcome.MISMATCH)
    with pytest.raises(Conflict):
        raise_for(IdempotencyOutcome.IN_FLIGHT)
    raise_for(IdempotencyOutcome.PROCEED)
    raise_for(IdempotencyOutcome.REPLAY)


def test_request_hash_is_sha256_of_sorted_compact_json() -> None:
    import hashlib

    fields = {"b": 1, "a": {"y": [1, 2], "x": "é"}}
    assert canonical_json(fields) == '{"a":{"x":"é","y":[1,2]},"b":1}'
    assert request_hash(fields) == hashlib.sha256(canonical_json(fields).encode()).hexdigest()


def test_request_hash_ignores_key_order_but_not_values() -> None:
    assert request_hash({"a": 1, "b": 2}) == request_hash({"b": 2, "a": 1})
    assert request_hash({"a": 1, "b": 2}) != request_hash({"a": 1, "b": 3})


def test_update_operation_names_the_workflow() -> None:
    assert update_workflow_operation(UUID(int=1)) == "update_workflow:00000000-0000-0000-0000-000000000001"
