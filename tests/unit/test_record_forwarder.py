"""How the consumer actor's forwarder hands batches to its target (ingest/consumer_actor.py), with a
plain stand-in for the target actor (no Ray cluster): a permanent error must not take the good
records of its batch with it, a retryable one retries the batch as a whole."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from domain.errors import Invalid, Unavailable
from ingest.consumer import ConsumedRecord
from ingest.consumer_actor import RecordForwarder


class _Method:
    """Mimics an actor method: ``.remote(arg)`` returns an awaitable."""

    def __init__(self, fn: Callable[[Any], Awaitable[None]]) -> None:
        self._fn = fn

    def remote(self, arg: Any) -> Awaitable[None]:
        return self._fn(arg)


class Target:
    """Fails a whole call on a b"bad" record (permanent) or a b"down" record (retryable)."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.applied: list[bytes] = []
        self.handle = _Method(self._handle)

    async def _handle(self, records: list[ConsumedRecord]) -> None:
        self.calls.append([r.value for r in records])
        for record in records:
            if record.value == b"bad":
                raise Invalid("undecodable")
            if record.value == b"down":
                raise Unavailable("database restarting")
            self.applied.append(record.value)


def batch(*values: bytes) -> list[ConsumedRecord]:
    return [ConsumedRecord(topic="t", partition=0, offset=i, key="k", value=v) for i, v in enumerate(values)]


async def test_a_permanent_error_in_a_batch_skips_only_the_offending_record() -> None:
    target = Target()
    await RecordForwarder(target, "handle", batched=True)(batch(b"1", b"bad", b"3"))
    assert target.calls[0] == [b"1", b"bad", b"3"]
    assert target.calls[1:] == [[b"1"], [b"bad"], [b"3"]]  # then one by one
    assert target.applied == [b"1", b"1", b"3"]  # "1" replayed (targets are idempotent), "3" not lost


async def test_a_retryable_error_in_a_batch_retries_the_whole_batch() -> None:
    target = Target()
    with pytest.raises(Unavailable):
        await RecordForwarder(target, "handle", batched=True)(batch(b"1", b"down", b"3"))
    assert target.calls == [[b"1", b"down", b"3"]]


async def test_a_retryable_error_while_delivering_one_by_one_retries_the_batch() -> None:
    target = Target()
    with pytest.raises(Unavailable):
        await RecordForwarder(target, "handle", batched=True)(batch(b"bad", b"down", b"3"))
    assert target.calls == [[b"bad", b"down", b"3"], [b"bad"], [b"down"]]


async def test_a_lone_record_with_a_permanent_error_is_reported_to_the_lane() -> None:
    target = Target()
    with pytest.raises(Invalid):
        await RecordForwarder(target, "handle", batched=True)(batch(b"bad"))
    assert target.calls == [[b"bad"]]
