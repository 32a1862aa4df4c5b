"""CONTAINER runner: run an image on the executor's Docker host (reference §4, SPEC §1).

Per job: create the container with **real cgroup limits** from :class:`ExecutionWorkerConfig`
(``container_cpus`` → ``nano_cpus``, ``container_memory`` → ``mem_limit`` = ``memswap_limit`` so
there is no swap escape, ``container_pids_limit``, ``container_network``, default ``none``) and the
labels ``chronoverse.job_id``/``chronoverse.workflow_id``/``chronoverse.attempt`` (recovery finds a
container by them), record its id under the lease, start it, stream stdout and stderr line by line
(one follow stream per output, each in a thread, feeding one asyncio queue; lines are numbered
in the order they reach the event loop, one counter for both streams), and wait for it:

* exit 0 → COMPLETED; non-zero → USER failure with the code; killed by the OOM killer → USER
  failure naming the memory limit;
* wall clock above the payload's ``timeout`` → stop (SIGTERM, 2 s grace, SIGKILL) → USER failure
  "container execution timed out";
* image missing on this host → USER failure (executors never pull: the build did);
* engine unreachable → SYSTEM failure (retried).

The container is **always** force-removed with its volumes: after success, failure, timeout, and
when the run is cancelled (lease lost, drain).  Every Docker SDK call runs in a thread.

The recovery half (:meth:`ContainerRunner.inspect`, :meth:`~ContainerRunner.replay_logs`,
:meth:`~ContainerRunner.stop`, :meth:`~ContainerRunner.remove`) lets another worker finish a job
whose worker died, from the container's real state (reference §6.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.utils import parse_bytes

from actors.container_runtime import LABEL_JOB_ID, LABEL_WORKFLOW_ID
from actors.runners.context import LogSink, RunContext
from domain.config import DockerConfig, ExecutionWorkerConfig
from domain.enums import ExecutionErrorCode, LogStream
from domain.execution import (
    CONTAINER_STOP_GRACE,
    SIGKILL_EXIT_CODE,
    ContainerState,
    RunOutcome,
    container_exit_outcome,
    container_timeout_outcome,
)
from domain.log_lines import LineSplitter, LogLine, SequenceCounter, split_docker_timestamp
from domain.payloads import ContainerPayload

log = logging.getLogger(__name__)

LABEL_ATTEMPT = "chronoverse.attempt"
#: How long, after the container exited, the log streams get to deliver their last lines.
LOG_DRAIN_TIMEOUT_S = 10.0
#: Lines buffered between the reader threads and the event loop (backpressure beyond it).
LINE_QUEUE_SIZE = 1024
#: How long a SIGKILLed container's ``OOMKilled`` flag gets to appear: dockerd sets it from the
#: runtime's OOM event, which can arrive after the exit event that ended ``wait()`` (or never:
#: see ``_kill_requested``).
OOM_FLAG_GRACE_S = 2.0
OOM_FLAG_POLL_S = 0.1

_EPOCH = datetime(1970, 1, 1)
_UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


class RuntimeUnavailable(Exception):
    """The Docker engine could not be reached (a SYSTEM failure)."""


@dataclass(frozen=True)
class _Line:
    stream: LogStream
    timestamp: datetime | None  # Docker's write time, naive UTC
    message: str


@dataclass
class _LogFollower:
    """The two follow streams of one container, read in threads into one asyncio queue."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Line | None] = field(default_factory=lambda: asyncio.Queue(LINE_QUEUE_SIZE))
    streams: list[Any] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)

    def start(self, container: Any) -> None:
        for stream in (LogStream.STDOUT, LogStream.STDERR):
            handle = container.logs(stream=True, follow=True, timestamps=True,
                                    stdout=stream is LogStream.STDOUT, stderr=stream is LogStream.STDERR)
            self.streams.append(handle)
            threading.Thread(target=self._read, args=(stream, handle), daemon=True,
                             name=f"logs-{container.short_id}-{stream.value}").start()

    def _put(self, item: _Line | None) -> None:
        if self.closed.is_set():
            return
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while not self.closed.is_set():
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                continue  # the consumer is slow (backpressure) or gone; re-check closed
            except Exception:
                return  # the loop is closing

    def _read(self, stream: LogStream, handle: Iterator[bytes]) -> None:
        splitter = LineSplitter()
        try:
            for chunk in handle:
                for raw in splitter.feed(chunk):
                    self._emit(stream, raw)
            for raw in splitter.finish():
                self._emit(stream, raw)
        except Exception as err:  # a broken stream ends that stream's lines, not the run
            log.debug("log stream %s ended with %s", stream, err)
        finally:
            self._put(None)

    def _emit(self, stream: LogStream, raw: str) -> None:
        moment, message = split_docker_timestamp(raw)
        if message:
            self._put(_Line(stream, moment, message))

    def close(self) -> None:
        """Unblock the reader threads (they end at the next read)."""
        self.closed.set()
        for handle in self.streams:
            with contextlib.suppress(Exception):
                handle.close()


class ContainerRunner:
    """Runs CONTAINER jobs through the ``docker`` SDK (see the module docstring)."""

    def __init__(self, docker_cfg: DockerConfig, cfg: ExecutionWorkerConfig, *,
                 max_parallel: int = 4) -> None:
        self._docker_cfg = docker_cfg
        self._cfg = cfg
        # Each running job holds up to three engine connections (two log streams and a wait).
        self._pool_size = max(10, 3 * max_parallel + 4)
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._memory_bytes = parse_bytes(cfg.container_memory)

    # ------------------------------------------------------------------ engine

    def _docker(self) -> Any:
        with self._client_lock:
            if self._client is None:
                try:
                    if self._docker_cfg.host:
                        self._client = docker.DockerClient(base_url=self._docker_cfg.host,
                                                           max_pool_size=self._pool_size)
                    else:
                        self._client = docker.from_env(max_pool_size=self._pool_size)
                except DockerException as err:
                    raise RuntimeUnavailable(f"docker engine unreachable: {err}") from None
            return self._client

    def close(self) -> None:
        """Close the engine client."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    @staticmethod
    def labels(job_id: UUID, workflow_id: UUID, attempt: int) -> dict[str, str]:
        """The labels that link a container to its job run."""
        return {LABEL_JOB_ID: str(job_id), LABEL_WORKFLOW_ID: str(workflow_id), LABEL_ATTEMPT: str(attempt)}

    def _create(self, ctx: RunContext, payload: ContainerPayload) -> Any:
        return self._docker().containers.create(
            image=payload.image,
            command=list(payload.cmd) or None,
            environment=[f"{key}={value}" for key, value in payload.env.items()],
            labels=self.labels(ctx.job_id, ctx.workflow_id, ctx.attempt),
            nano_cpus=int(self._cfg.container_cpus * 1_000_000_000),
            mem_limit=self._memory_bytes,
            memswap_limit=self._memory_bytes,
            pids_limit=self._cfg.container_pids_limit,
            network_mode=self._cfg.container_network,
        )

    # ------------------------------------------------------------------ run

    async def run(self, ctx: RunContext, payload: ContainerPayload, logs: LogSink) -> RunOutcome:
        """Run the job's container to its end (see the module docstring)."""
        try:
            container = await asyncio.to_thread(self._create, ctx, payload)
        except ImageNotFound:
            return RunOutcome.failed(
                ExecutionErrorCode.IMAGE_NOT_FOUND,
                f"image {payload.image} is not present on this executor's docker host "
                "(executors never pull images; rebuild the workflow)",
            )
        except RuntimeUnavailable as err:
            return RunOutcome.failed(ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE, str(err))
        except _UNREACHABLE as err:
            return RunOutcome.failed(ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE,
                                     f"docker engine unreachable: {err}")
        except APIError as err:
            if err.is_server_error():
                return RunOutcome.failed(
                    ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE,
                    f"docker engine error creating the container: {err.explanation or err}")
            return RunOutcome.failed(ExecutionErrorCode.CONTAINER_CREATE_FAILED,
                                     f"failed to create container: {err.explanation or err}")
        try:
            await ctx.attach(container.id)
            return await self._start_and_follow(container, payload, logs)
        finally:
            # Shielded: a cancelled run (lease lost) must still not leave its container behind.
            await asyncio.shield(self.remove(container.id))

    async def _start_and_follow(self, container: Any, payload: ContainerPayload, logs: LogSink) -> RunOutcome:
        started = time.monotonic()
        started_at = int(time.time()) - 1  # Docker's event filter takes whole seconds
        try:
            await asyncio.to_thread(container.start)
        except _UNREACHABLE as err:
            return RunOutcome.failed(ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE,
                                     f"docker engine unreachable: {err}")
        except APIError as err:
            return RunOutcome.failed(ExecutionErrorCode.CONTAINER_START_FAILED,
                                     f"failed to start container: {err.explanation or err}")
        follower = _LogFollower(asyncio.get_running_loop())
        pump: asyncio.Task[None] | None = None
        try:
            await asyncio.to_thread(follower.start, container)
            pump = asyncio.create_task(self._pump(follower, logs, SequenceCounter()))
            timeout = payload.timeout.total_seconds()
            waiter = asyncio.ensure_future(asyncio.to_thread(container.wait, timeout=timeout + 60))
            remaining = max(0.0, timeout - (time.monotonic() - started))
            timed_out = False
            try:
                result = await asyncio.wait_for(asyncio.shield(waiter), remaining)
            except TimeoutError:
                timed_out = True
                await asyncio.to_thread(container.stop, timeout=int(CONTAINER_STOP_GRACE.total_seconds()))
                result = await asyncio.wait_for(waiter, CONTAINER_STOP_GRACE.total_seconds() + 30)
            # The exit status is only reported after the last lines were delivered.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pump), LOG_DRAIN_TIMEOUT_S)
            if timed_out:
                return container_timeout_outcome(payload.timeout)
            # A SIGKILL under a memory limit may be the OOM killer: give its flag time to appear.
            maybe_oom = result.get("StatusCode") == SIGKILL_EXIT_CODE and bool(self._memory_bytes)
            state = await self._final_state(container, wait_for_oom=OOM_FLAG_GRACE_S if maybe_oom else 0.0)
            exit_code = int(result.get("StatusCode", state.get("ExitCode", -1)))
            oom_reported = bool(state.get("OOMKilled"))
            oom_inferred = maybe_oom and not oom_reported and not await asyncio.to_thread(
                self._kill_requested, container.id, started_at)
            return container_exit_outcome(exit_code, oom_killed=oom_reported or oom_inferred,
                                          oom_reported=oom_reported, memory_limit_bytes=self._memory_bytes)
        except _UNREACHABLE as err:
            return RunOutcome.failed(ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE,
                                     f"docker engine unreachable while running the container: {err}")
        except APIError as err:
            return RunOutcome.failed(
                ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE,
                f"docker engine error while running the container: {err.explanation or err}")
        finally:
            follower.close()
            if pump is not None and not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump

    def _kill_requested(self, container_id: str, since: int) -> bool:
        """Whether anyone asked Docker to kill or stop the container since ``since`` (its ``kill``
        events).  Inside its namespaces nothing can SIGKILL a container's PID 1, so a SIGKILL
        nobody requested came from the kernel: under a memory limit, the OOM killer.  dockerd
        learns of an OOM kill from a cgroup event that it can miss when the container exits and its
        cgroup goes at once (seen here under load: neither ``OOMKilled`` nor an ``oom`` event
        ever came), whereas ``kill`` events are written by the API call itself."""
        events = self._docker().events(since=since, until=int(time.time()) + 1, decode=True,
                                       filters={"container": container_id, "event": "kill"})
        return any(True for _ in events)

    @staticmethod
    async def _final_state(container: Any, *, wait_for_oom: float = 0.0) -> dict[str, Any]:
        """The exited container's ``State``; with ``wait_for_oom``, re-read it until ``OOMKilled``
        is set or that many seconds passed."""
        deadline = time.monotonic() + wait_for_oom
        while True:
            await asyncio.to_thread(container.reload)
            state: dict[str, Any] = container.attrs.get("State", {})
            if state.get("OOMKilled") or time.monotonic() >= deadline:
                return state
            await asyncio.sleep(OOM_FLAG_POLL_S)

    @staticmethod
    async def _pump(follower: _LogFollower, logs: LogSink, counter: SequenceCounter) -> None:
        ended = 0
        while ended < 2:
            item = await follower.queue.get()
            if item is None:
                ended += 1
                continue
            line = LogLine(stream=item.stream, sequence_num=counter.next(), message=item.message,
                           timestamp=item.timestamp or _utcnow())
            await logs.write(line)

    # ------------------------------------------------------------------ recovery

    def _find(self, container_id: str | None, job_id: UUID, attempt: int) -> Any:
        client = self._docker()
        if container_id:
            with contextlib.suppress(NotFound):
                return client.containers.get(container_id)
        found = client.containers.list(all=True, filters={"label": [f"{LABEL_JOB_ID}={job_id}",
                                                                    f"{LABEL_ATTEMPT}={attempt}"]})
        return found[0] if found else None

    async def inspect(self, *, container_id: str | None, job_id: UUID, attempt: int) -> ContainerState | None:
        """The state of a job run's container, found by id or else by its labels; ``None`` if
        there is none.  Raises :class:`RuntimeUnavailable` when the engine cannot be asked."""
        try:
            container = await asyncio.to_thread(self._find, container_id, job_id, attempt)
        except (*_UNREACHABLE, DockerException) as err:
            raise RuntimeUnavailable(f"docker engine unreachable: {err}") from None
        if container is None:
            return None
        state = container.attrs.get("State", {})
        status = state.get("Status", "")
        return ContainerState(
            container_id=container.id,
            running=bool(state.get("Running")) or status in ("restarting", "paused"),
            started=status != "created",
            exit_code=None if state.get("Running") else int(state.get("ExitCode", -1)),
            oom_killed=bool(state.get("OOMKilled")),
            memory_limit_bytes=(container.attrs.get("HostConfig") or {}).get("Memory") or None,
        )

    def _stop(self, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            self._docker().containers.get(container_id).stop(timeout=int(CONTAINER_STOP_GRACE.total_seconds()))

    async def stop(self, container_id: str) -> None:
        """Stop a container (SIGTERM, 2 s grace, SIGKILL); a missing one is fine."""
        await asyncio.to_thread(self._stop, container_id)

    def _read_all(self, container_id: str) -> list[_Line]:
        container = self._docker().containers.get(container_id)
        lines: list[tuple[datetime | None, int, _Line]] = []
        for order, stream in enumerate((LogStream.STDOUT, LogStream.STDERR)):
            raw = container.logs(stdout=stream is LogStream.STDOUT, stderr=stream is LogStream.STDERR,
                                 timestamps=True, stream=False, follow=False)
            splitter = LineSplitter()
            for text in splitter.feed(raw) + splitter.finish():
                moment, message = split_docker_timestamp(text)
                if message:
                    lines.append((moment, order, _Line(stream, moment, message)))
        # Docker's write times merge the two streams into the order the lines were produced.
        lines.sort(key=lambda item: (item[0] or _EPOCH, item[1]))
        return [line for _, _, line in lines]

    async def replay_logs(self, container_id: str, logs: LogSink) -> int:
        """Re-publish every line of a container (recovery), numbered from 0 in write order, so the
        event ids match those a live run gave the same lines; returns how many."""
        try:
            lines = await asyncio.to_thread(self._read_all, container_id)
        except NotFound:
            return 0
        counter = SequenceCounter()
        for item in lines:
            await logs.write(LogLine(stream=item.stream, sequence_num=counter.next(), message=item.message,
                                     timestamp=item.timestamp or _utcnow()))
        return len(lines)

    def _remove(self, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            self._docker().containers.get(container_id).remove(force=True, v=True)

    async def remove(self, container_id: str) -> None:
        """Force-remove a container and its volumes; a missing one is fine, other errors are logged
        (a container left behind is swept by recovery or the workflow worker)."""
        try:
            await asyncio.to_thread(self._remove, container_id)
        except Exception as err:
            log.warning("failed to remove container %s: %s", container_id, err)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
