"""The ``log-store`` actor on a real local Ray: other processes reach the one chdb owner through
``log_store_client``, store errors arrive unchanged, and a killed actor comes back with its data."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import ray

from actors.log_store import start_log_store_actor
from domain.config import ClickHouseConfig
from domain.enums import LogStream
from domain.errors import Invalid, Unavailable
from store.logstore import HttpLogStore, LogRow
from store.logstore.remote import LOG_STORE_ACTOR_NAME, log_store_client

NAMESPACE = "cv-test-log-store"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.ERROR)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def actor_cfg(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseConfig]:
    cfg = ClickHouseConfig(backend="chdb", chdb_path=str(tmp_path_factory.mktemp("chdb-actor")))
    handle = start_log_store_actor(cfg, NAMESPACE, detached=False, num_cpus=0.1)
    yield cfg
    ray.kill(handle, no_restart=True)


def rows(user_id: uuid.UUID, workflow_id: uuid.UUID, job_id: uuid.UUID, n: int) -> list[LogRow]:
    return [LogRow(event_id=f"log:{job_id}:stdout:{i}", user_id=user_id, workflow_id=workflow_id,
                   job_id=job_id, timestamp=datetime.now(UTC), message=f"Hello {i}", sequence_num=i,
                   stream=LogStream.STDOUT)
            for i in range(n)]


async def test_client_before_the_actor_exists_is_unavailable(local_ray: None) -> None:
    client = log_store_client(ClickHouseConfig(backend="chdb"), "cv-test-no-log-store")
    assert await client.ping() is False
    with pytest.raises(Unavailable):
        await client.count(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())


async def test_lines_round_trip_through_the_actor(actor_cfg: ClickHouseConfig) -> None:
    client = log_store_client(actor_cfg, NAMESPACE)
    ids = (uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    batch = rows(*ids, 150)
    assert await client.insert(batch) == 150
    assert await client.insert(batch) == 0
    page = await client.page(*ids)
    assert [line.sequence_num for line in page.logs] == list(range(149, 49, -1))
    assert page.cursor is not None
    rest = await client.page(*ids, cursor=page.cursor)
    assert [line.sequence_num for line in rest.logs] == list(range(49, -1, -1))
    token = "ab" * 16
    found = await client.search(*ids, query="HELLO 149", highlight_token=token)
    assert [line.message for line in found.logs] == [f"__CV_HL_START_{token}__Hello 149__CV_HL_END_{token}__"]
    assert await client.count(*ids) == 150
    await client.delete_workflow(ids[0], ids[1])
    assert await client.count(*ids) == 0


async def test_store_errors_arrive_with_their_class_and_code(actor_cfg: ClickHouseConfig) -> None:
    client = log_store_client(actor_cfg, NAMESPACE)
    with pytest.raises(Invalid) as info:
        await client.page(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), limit=0)
    assert type(info.value) is Invalid
    assert info.value.code == "invalid_limit"


async def test_killed_actor_restarts_with_its_lines(actor_cfg: ClickHouseConfig) -> None:
    client = log_store_client(actor_cfg, NAMESPACE)
    ids = (uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    await client.insert(rows(*ids, 10))
    ray.kill(ray.get_actor(LOG_STORE_ACTOR_NAME, namespace=NAMESPACE), no_restart=False)
    assert await client.count(*ids) == 10
    again = start_log_store_actor(actor_cfg, NAMESPACE, detached=False)
    assert again._actor_id == ray.get_actor(LOG_STORE_ACTOR_NAME, namespace=NAMESPACE)._actor_id
    assert await client.ping() is True


def test_http_backend_needs_no_actor() -> None:
    cfg = ClickHouseConfig(backend="http", hosts="127.0.0.1:8123")
    assert isinstance(log_store_client(cfg, NAMESPACE), HttpLogStore)
    with pytest.raises(ValueError):
        start_log_store_actor(cfg, NAMESPACE)
