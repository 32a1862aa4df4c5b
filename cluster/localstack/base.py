"""What every local-stack component shares: its record in ``stack.json``, its health, its errors,
and the context it starts in."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cluster.localstack.processes import RunAs, descendants, is_alive
from domain.config import Settings
from domain.enums import ComponentState, StackComponent
from domain.topology import ClusterSpec

T = TypeVar("T")


class StackError(Exception):
    """A stack component could not be started or stopped.  ``str(err)`` names the part, the reason
    and where its log is, on one line."""

    def __init__(self, component: StackComponent | str, reason: str, log: Path | str | None = None) -> None:
        self.component = str(component)
        self.reason = reason
        self.log = str(log) if log else None
        where = f" (log: {self.log})" if self.log else ""
        super().__init__(f"{self.component}: {reason}{where}")


class ComponentRecord(BaseModel):
    """One component as recorded in ``stack.json``."""

    model_config = ConfigDict(extra="forbid")

    name: StackComponent
    #: True when this stack started the process and so must stop it on ``down``.
    managed: bool
    pid: int | None = None
    port: int | None = None
    endpoint: str
    log: str | None = None
    #: Component-specific facts needed to check or stop it later (data dirs, sockets, session id).
    data: dict[str, str] = Field(default_factory=dict)
    #: Environment variables that point a client at this component.
    env: dict[str, str] = Field(default_factory=dict)
    #: Set when an optional component is unavailable; the reason shown by ``status``.
    unavailable: str | None = None


class ComponentStatus(BaseModel):
    """One row of ``chronoverse status``."""

    model_config = ConfigDict(frozen=True)

    name: StackComponent
    state: ComponentState
    pid: int | None = None
    endpoint: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state is not ComponentState.DOWN


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


@dataclass
class StackContext:
    """Everything a component needs to start: configuration, where its files go, how to report."""

    settings: Settings
    spec: ClusterSpec
    state_dir: Path
    #: Test-speed settings (PostgreSQL fsync=off …); never for ``chronoverse up``.
    test_mode: bool = False
    #: Components the user declared external although their host is loopback.
    external: frozenset[StackComponent] = frozenset()
    progress: Callable[[str], None] = print
    #: The unprivileged account servers run as when we are root; resolved when first needed (it may
    #: create a system user, which ``status`` must never do).
    run_as: RunAs | None = None
    #: Environment the stack's processes inherit (the CLI's environment plus the stack's own vars).
    child_env: dict[str, str] = field(default_factory=dict)
    #: Start the Ray head on the fake multi-node provider (``chronoverse up --elastic``).
    elastic: bool = False

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, component: StackComponent) -> Path:
        return self.logs_dir / f"{component.value}.log"


class Component(ABC):
    """A stack part.  Stateless: everything it must remember goes into its :class:`ComponentRecord`,
    so ``down`` and ``status`` work from ``stack.json`` alone."""

    name: ClassVar[StackComponent]
    #: An optional component that cannot be had is reported, not fatal.
    optional: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def external(cls, ctx: StackContext) -> ComponentRecord | None:
        """A record for the service configured elsewhere, or ``None`` when we must start one."""

    @classmethod
    @abstractmethod
    def start(cls, ctx: StackContext) -> ComponentRecord:
        """Start the component and wait until healthy; raise :class:`StackError` otherwise."""

    @classmethod
    @abstractmethod
    def check(cls, record: ComponentRecord, settings: Settings) -> Health:
        """Whether the recorded component answers now.  Managed components are checked at their
        recorded endpoint; external ones with ``settings`` (credentials, hosts)."""

    @classmethod
    @abstractmethod
    def stop(cls, record: ComponentRecord) -> None:
        """Stop the component if this stack started it (``record.managed``); by pid, never by name."""

    @classmethod
    def recorded_pids(cls, record: ComponentRecord) -> list[int]:
        """Every pid that belongs to the component (checked after ``down``)."""
        if not record.managed or not record.pid or not is_alive(record.pid):
            return []
        return [record.pid, *descendants(record.pid)]


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.x.x.x``, ``::1`` or empty: a host the local stack can serve."""
    host = host.strip().strip("[]")
    if host in ("", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_sync(make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
    """Run a coroutine to completion from sync code, even when the caller is inside a running event
    loop (an async test calling a sync helper): it gets a fresh loop in a helper thread."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as err:
            error.append(err)

    thread = threading.Thread(target=target, name="localstack-sync", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"timed out after {timeout:.0f}s")
    if error:
        raise error[0]
    return result[0]
