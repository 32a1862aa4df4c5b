"""The local embedded stack: start, check and stop its components, recorded in ``stack.json``.

The same code serves ``chronoverse up``/``down``/``status`` and the test fixture (which starts a
subset on free ports in a temporary directory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from cluster.localstack.base import (
    Component,
    ComponentRecord,
    ComponentStatus,
    StackContext,
    StackError,
)
from cluster.localstack.chdb_store import ChdbStore
from cluster.localstack.docker_engine import DockerEngine
from cluster.localstack.kafka_broker import KafkaBroker
from cluster.localstack.postgres import PostgresServer
from cluster.localstack.processes import is_alive
from cluster.localstack.ray_head import RayHead
from cluster.localstack.redis_server import RedisServer
from cluster.localstack.state import StackState, locked
from domain.config import Settings
from domain.enums import ComponentState, StackComponent
from domain.topology import ClusterSpec

#: Start order; ``down`` goes in reverse.
COMPONENTS: dict[StackComponent, type[Component]] = {
    StackComponent.POSTGRES: PostgresServer,
    StackComponent.REDIS: RedisServer,
    StackComponent.KAFKA: KafkaBroker,
    StackComponent.CLICKHOUSE: ChdbStore,
    StackComponent.DOCKER: DockerEngine,
    StackComponent.RAY: RayHead,
}
INFRA: tuple[StackComponent, ...] = (
    StackComponent.POSTGRES,
    StackComponent.REDIS,
    StackComponent.KAFKA,
    StackComponent.CLICKHOUSE,
    StackComponent.DOCKER,
)
ALL: tuple[StackComponent, ...] = (*INFRA, StackComponent.RAY)


def parse_external(value: str) -> frozenset[StackComponent]:
    """``"postgres,redis"`` → those components (``CHRONOVERSE_EXTERNAL``); unknown names are an error."""
    out: set[StackComponent] = set()
    for item in value.split(","):
        item = item.strip().lower()
        if not item:
            continue
        try:
            out.add(StackComponent(item))
        except ValueError:
            choices = ", ".join(c.value for c in StackComponent)
            raise StackError("stack", f"CHRONOVERSE_EXTERNAL={value!r}: unknown component {item!r} "
                             f"(choose from {choices})") from None
    return frozenset(out)


def load_state(state_dir: Path) -> StackState | None:
    return StackState.load(state_dir)


def stop_stack(state_dir: Path, progress: Callable[[str], None] = print) -> list[str]:
    """Stop every component this stack started (by pid), newest first.  Returns the problems
    (components that failed to stop, pids still alive); empty when everything is gone."""
    problems: list[str] = []
    with locked(state_dir):
        state = StackState.load(state_dir)
        if state is None:
            progress(f"no stack recorded in {state_dir}")
            return problems
        for name in reversed(ALL):
            record = state.components.get(name)
            if record is None:
                continue
            if record.managed:
                component = COMPONENTS[name]
                pids = component.recorded_pids(record)
                started = time.monotonic()
                try:
                    component.stop(record)
                except StackError as err:
                    problems.append(str(err))
                alive = [pid for pid in pids if is_alive(pid)]
                if alive:
                    problems.append(f"{name}: still running: {alive}")
                else:
                    progress(f"{name}: stopped ({time.monotonic() - started:.1f}s)")
            del state.components[name]
            state.save()
        state.remove()
    return problems


class LocalStack:
    """Start/inspect the embedded stack in ``state_dir`` for ``settings``/``spec``."""

    def __init__(
        self,
        settings: Settings,
        spec: ClusterSpec,
        *,
        state_dir: Path,
        test_mode: bool = False,
        external: Iterable[StackComponent] = (),
        progress: Callable[[str], None] = print,
        environ: Mapping[str, str] | None = None,
        elastic: bool = False,
    ) -> None:
        state_dir = state_dir.resolve()
        self.ctx = StackContext(
            settings=settings,
            spec=spec,
            state_dir=state_dir,
            test_mode=test_mode,
            external=frozenset(external),
            progress=progress,
            child_env=dict(os.environ if environ is None else environ),
            elastic=elastic,
        )

    @property
    def state_dir(self) -> Path:
        return self.ctx.state_dir

    def state(self) -> StackState:
        return StackState.load(self.state_dir) or StackState(state_dir=str(self.state_dir))

    def env(self) -> dict[str, str]:
        """Environment overrides (POSTGRES_PORT, KAFKA_BROKERS, DOCKER_HOST, CHRONOVERSE_RAY_ADDRESS …)
        that point clients at the started services."""
        return self.state().env()

    def up(self, components: Iterable[StackComponent] = ALL) -> StackState:
        """Start what is not running yet (idempotent) and wait until healthy.  Raises
        :class:`StackError` naming the part, the reason and its log."""
        self.ctx.logs_dir.mkdir(parents=True, exist_ok=True)
        with locked(self.state_dir):
            state = self.state()
            for record in state.components.values():
                self._inherit(record)
            for name in components:
                record = self._ensure(state, name)
                state.components[name] = record
                self._inherit(record)
                state.save()
        return state

    def down(self) -> list[str]:
        return stop_stack(self.state_dir, self.ctx.progress)

    def status(self, components: Iterable[StackComponent] = ALL) -> list[ComponentStatus]:
        state = self.state()
        return [self._status(name, state.components.get(name)) for name in components]

    # -- internals -----------------------------------------------------------------------------

    def _inherit(self, record: ComponentRecord) -> None:
        # Processes started later (the Ray head and its workers) see where the services are.
        for key, value in record.env.items():
            self.ctx.child_env.setdefault(key, value)

    def _ensure(self, state: StackState, name: StackComponent) -> ComponentRecord:
        component, progress = COMPONENTS[name], self.ctx.progress
        existing = state.components.get(name)
        if existing is not None and existing.managed:
            # Ours, whatever the environment now says: the recorded env (DOCKER_HOST …) points at it.
            health = component.check(existing, self.ctx.settings)
            if health.ok:
                pid = f"pid {existing.pid}, " if existing.pid else ""
                detail = f"; {health.detail}" if health.detail else ""
                progress(f"{name}: already running ({pid}{existing.endpoint}{detail})")
                return existing
            progress(f"{name}: recorded but not healthy ({health.detail}); restarting")
            component.stop(existing)
            return self._start(component)
        external = component.external(self.ctx)
        if external is not None:
            health = component.check(external, self.ctx.settings)
            if health.ok:
                progress(f"{name}: using {external.endpoint} (not started by this stack)")
                return external
            if component.optional:
                progress(f"{name}: unavailable ({health.detail})")
                return external.model_copy(update={"unavailable": health.detail})
            raise StackError(name, f"configured server {external.endpoint} does not answer: {health.detail}")
        return self._start(component)

    def _start(self, component: type[Component]) -> ComponentRecord:
        name, progress = component.name, self.ctx.progress
        progress(f"{name}: starting")
        started = time.monotonic()
        try:
            record = component.start(self.ctx)
        except StackError as err:
            if not component.optional:
                raise
            progress(f"{name}: unavailable ({err.reason})")
            return ComponentRecord(name=name, managed=False, endpoint="", unavailable=err.reason)
        progress(f"{name}: ready in {time.monotonic() - started:.1f}s ({record.endpoint})")
        return record

    def _status(self, name: StackComponent, record: ComponentRecord | None) -> ComponentStatus:
        component = COMPONENTS[name]
        if record is None or not record.managed:
            fresh = component.external(self.ctx)
            if fresh is not None:
                record = fresh
            elif record is None or not record.unavailable:
                state = ComponentState.UNAVAILABLE if component.optional else ComponentState.DOWN
                detail = "no engine answers" if component.optional else "not started (run chronoverse up)"
                return ComponentStatus(name=name, state=state, detail=detail)
        if record.unavailable:
            return ComponentStatus(name=name, state=ComponentState.UNAVAILABLE, detail=record.unavailable)
        health = component.check(record, self.ctx.settings)
        if not health.ok:
            optional_missing = component.optional and not record.managed
            state = ComponentState.UNAVAILABLE if optional_missing else ComponentState.DOWN
        elif not record.managed:
            state = ComponentState.EXTERNAL
        else:
            state = ComponentState.RUNNING if record.pid else ComponentState.EMBEDDED
        return ComponentStatus(name=name, state=state, pid=record.pid, endpoint=record.endpoint,
                               detail=health.detail)
