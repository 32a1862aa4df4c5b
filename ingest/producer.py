"""Publishing records: one :class:`EventProducer` per process, built from :class:`KafkaConfig`.

* ``acks=all`` and a wait for the broker's ack, so a returned send is durable on the broker.
* No ``enable_idempotence``: aiokafka's InitProducerId fails on tansu (infra-notes §1a.3);
  duplicates are harmless because every consumer dedupes on the event key.
* aiokafka's default partitioner is Java-compatible murmur2 over the key bytes, the same
  per-key placement the seed's franz-go producer used.
* The current OpenTelemetry context is injected as W3C ``traceparent``/``tracestate`` headers
  (SPEC §7) unless the caller already carries one (the outbox relay forwards the request's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import propagate
from pydantic import BaseModel, ConfigDict, Field

from domain.config import KafkaConfig
from domain.errors import Unavailable
from ingest.connection import connection_options
from ingest.events import Event

log = logging.getLogger(__name__)

Value = BaseModel | bytes | str
"""A record value: a pydantic event (sent as its JSON), or already-encoded JSON text/bytes."""


class OutgoingRecord(BaseModel):
    """One record for :meth:`EventProducer.send_batch`."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    topic: str
    key: str
    value: Value
    headers: dict[str, str] = Field(default_factory=dict)


class Delivery(BaseModel):
    """Where the broker stored a record."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


def _encode(value: Value) -> bytes:
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    if isinstance(value, str):
        return value.encode()
    return value


def _headers(extra: Mapping[str, str] | None) -> list[tuple[str, bytes]]:
    carrier: dict[str, str] = dict(extra or {})
    if "traceparent" not in carrier:
        propagate.inject(carrier)
    return [(name, text.encode()) for name, text in carrier.items()]


class EventProducer:
    """An aiokafka producer with our delivery settings.  ``start()`` before use, ``stop()`` after;
    also usable as ``async with EventProducer(cfg) as producer``.

    Failures to reach or write to the broker raise :class:`~domain.errors.Unavailable`.
    """

    def __init__(
        self,
        cfg: KafkaConfig,
        *,
        client_id: str = "chronoverse-producer",
        linger_ms: int = 0,
        max_batch_size: int = 256 * 1024,
        request_timeout_ms: int = 15_000,
    ) -> None:
        self._cfg = cfg
        self._producer = AIOKafkaProducer(
            **connection_options(cfg, client_id=client_id),
            acks="all",
            enable_idempotence=False,
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
            request_timeout_ms=request_timeout_ms,
        )
        self._started = False

    async def start(self) -> None:
        """Connect to the cluster (fetches metadata)."""
        try:
            await self._producer.start()
        except KafkaError as err:
            await self._producer.stop()
            raise Unavailable(f"kafka at {self._cfg.brokers}: {err}") from err
        self._started = True

    async def stop(self) -> None:
        """Flush pending records and close."""
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(
        self, topic: str, key: str, event: Value, headers: Mapping[str, str] | None = None
    ) -> Delivery:
        """Send one record and wait for the broker's acknowledgement."""
        return (await self.send_batch([OutgoingRecord(topic=topic, key=key, value=event,
                                                      headers=dict(headers or {}))]))[0]

    async def send_batch(self, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        """Hand every record to the producer first, then wait for all acks, so they travel in as few
        requests as possible.  Per-key order is kept (same partition, appended in order).

        If any record fails the whole call raises, after the rest have settled; the caller retries
        the batch (consumers dedupe, so records that did land are harmless).
        """
        outcomes = await self.send_each(records)
        failures = [item for item in outcomes if isinstance(item, BaseException)]
        if failures:
            raise Unavailable(f"kafka publish failed for {len(failures)} of {len(records)} records: "
                              f"{failures[0]}") from failures[0]
        return [item for item in outcomes if isinstance(item, Delivery)]

    async def send_each(self, records: Sequence[OutgoingRecord]) -> list[Delivery | Exception]:
        """:meth:`send_batch` that reports each record's outcome instead of raising: its
        :class:`Delivery`, or the exception that record failed with.  For callers that settle records
        one by one (the outbox relay marks each row published or failed)."""
        pending: list[asyncio.Future[Any] | Exception] = []
        for record in records:
            try:
                pending.append(await self._producer.send(
                    record.topic,
                    value=_encode(record.value),
                    key=record.key.encode(),
                    headers=_headers(record.headers),
                ))
            except Exception as err:  # not accepted at all: stopped producer, unknown topic, too large
                pending.append(err)
        futures = [item for item in pending if not isinstance(item, Exception)]
        acks = iter(await asyncio.gather(*futures, return_exceptions=True))
        outcomes: list[Delivery | Exception] = []
        for item in pending:
            if isinstance(item, Exception):
                outcomes.append(item)
                continue
            ack = next(acks)
            if isinstance(ack, Exception):
                outcomes.append(ack)
            elif isinstance(ack, BaseException):  # cancellation: not ours to swallow
                raise ack
            else:
                outcomes.append(Delivery(topic=ack.topic, partition=ack.partition, offset=ack.offset))
        return outcomes

    async def publish(self, event: Event, headers: Mapping[str, str] | None = None) -> Delivery:
        """Send an event to its own topic under its own record key."""
        return await self.send(event.topic, event.record_key(), event, headers)
