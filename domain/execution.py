"""How a job run ends: failure classification, system-retry backoff and the terminal decision.

Pure policy for the execution worker (reference §5.3, §6.3):

* every failure carries an :class:`~domain.enums.ExecutionErrorCode`; the code alone decides
  whether it is the workload's fault (**USER**: non-zero exit, timeout, OOM, wrong HTTP status,
  missing image…, never retried) or ours (**SYSTEM**: Docker or the endpoint unreachable, lease
  lost, workflow not ready…, retried).  No message is ever matched: the seed's "DeadlineExceeded
  is SYSTEM unless the text says *container execution timed out*" becomes two codes;
* a SYSTEM failure on attempt ``n < limit`` releases the job back to PENDING after
  ``base·2^(n-1)`` (30 s, 60 s, … capped at 8·base = 240 s); at the limit it fails for good;
* recovery of an expired lease turns the container's real state into an outcome the same way.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from domain.config import ExecutionWorkerConfig
from domain.enums import ExecutionErrorCode, FailureKind

#: ``jobs.last_error_message`` is truncated to this many characters (seed: 4096).
MAX_ERROR_MESSAGE_CHARS = 4096
#: Concurrency slots per execution worker when ``EXECUTION_WORKER_CONCURRENCY=0``.
DEFAULT_SLOTS = 4
#: Grace given to a container between SIGTERM and SIGKILL when it is stopped (seed: 2 s).
CONTAINER_STOP_GRACE = timedelta(seconds=2)

_C = ExecutionErrorCode
_KIND: dict[ExecutionErrorCode, FailureKind] = {
    _C.CONTAINER_EXIT_NONZERO: FailureKind.USER,
    _C.CONTAINER_TIMED_OUT: FailureKind.USER,
    _C.CONTAINER_OUT_OF_MEMORY: FailureKind.USER,
    _C.IMAGE_NOT_FOUND: FailureKind.USER,
    _C.CONTAINER_CREATE_FAILED: FailureKind.USER,
    _C.CONTAINER_START_FAILED: FailureKind.USER,
    _C.UNEXPECTED_STATUS: FailureKind.USER,
    _C.INVALID_ENDPOINT: FailureKind.USER,
    _C.INVALID_PAYLOAD: FailureKind.USER,
    _C.TASK_FAILED: FailureKind.USER,
    _C.TASK_TIMED_OUT: FailureKind.USER,
    _C.CONTAINER_RUNTIME_UNAVAILABLE: FailureKind.SYSTEM,
    _C.CONTAINER_MISSING: FailureKind.SYSTEM,
    _C.ENDPOINT_UNREACHABLE: FailureKind.SYSTEM,
    _C.TASK_UNAVAILABLE: FailureKind.SYSTEM,
    _C.WORKFLOW_NOT_READY: FailureKind.SYSTEM,
    _C.SCHEDULE_FAILED: FailureKind.SYSTEM,
    _C.LEASE_EXPIRED: FailureKind.SYSTEM,
    _C.CANCELED: FailureKind.SYSTEM,
    _C.INTERNAL: FailureKind.SYSTEM,
}


def failure_kind(code: ExecutionErrorCode) -> FailureKind:
    """USER or SYSTEM for an error code (every code is classified)."""
    return _KIND[ExecutionErrorCode(code)]


def truncate_error_message(message: str) -> str:
    """Cap an error message at :data:`MAX_ERROR_MESSAGE_CHARS` characters."""
    return message[:MAX_ERROR_MESSAGE_CHARS]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExecutionFailure(_Frozen):
    """Why a run failed: a code (which decides the kind) and a human-readable message."""

    code: ExecutionErrorCode
    message: str

    @property
    def kind(self) -> FailureKind:
        return failure_kind(self.code)


class RunOutcome(_Frozen):
    """What a runner reports: success, or one failure."""

    failure: ExecutionFailure | None = None

    @property
    def completed(self) -> bool:
        return self.failure is None

    @classmethod
    def success(cls) -> RunOutcome:
        return cls()

    @classmethod
    def failed(cls, code: ExecutionErrorCode, message: str) -> RunOutcome:
        return cls(failure=ExecutionFailure(code=code, message=message))


class Complete(_Frozen):
    """Mark the job COMPLETED."""


class Fail(_Frozen):
    """Mark the job FAILED for good."""

    failure_kind: FailureKind
    error_code: ExecutionErrorCode
    error_message: str


class Release(_Frozen):
    """Hand the job back to PENDING; the scheduler re-dispatches it ``retry_after`` from now (the
    database's clock, which the scheduler compares against)."""

    retry_after: timedelta
    error_code: ExecutionErrorCode
    error_message: str


Decision = Complete | Fail | Release


class RetryPolicy(_Frozen):
    """System-retry policy: attempt limit and exponential backoff (seed: 3 attempts, 30 s base)."""

    limit: int = Field(default=3, ge=1)
    base_backoff: timedelta = timedelta(seconds=30)
    max_backoff: timedelta = timedelta(seconds=240)

    @classmethod
    def from_config(cls, cfg: ExecutionWorkerConfig) -> RetryPolicy:
        """``EXECUTION_WORKER_SYSTEM_RETRY_LIMIT``/``_BACKOFF``; the cap stays 8 times the base (240 s)."""
        base = cfg.system_retry_backoff
        return cls(limit=cfg.system_retry_limit, base_backoff=base, max_backoff=base * 8)

    def backoff(self, attempt: int) -> timedelta:
        """Delay before the retry that follows attempt ``attempt`` (1-based): base, 2·base, 4·base…"""
        exponent = min(max(attempt, 1) - 1, 32)
        return min(self.base_backoff * (2**exponent), self.max_backoff)

    def decide(self, outcome: RunOutcome, *, attempts: int) -> Decision:
        """The terminal (or retry) transition for a run that ended with ``outcome`` on attempt
        ``attempts`` (the job's ``attempts`` column, already incremented by the claim)."""
        failure = outcome.failure
        if failure is None:
            return Complete()
        message = truncate_error_message(failure.message)
        if failure.kind is FailureKind.SYSTEM and attempts < self.limit:
            return Release(retry_after=self.backoff(attempts), error_code=failure.code,
                           error_message=message)
        return Fail(failure_kind=failure.kind, error_code=failure.code, error_message=message)


def worker_slots(concurrency: int) -> int:
    """Jobs one execution worker runs at once (``EXECUTION_WORKER_CONCURRENCY``; 0 → 4)."""
    return concurrency if concurrency > 0 else DEFAULT_SLOTS


def renew_interval(lease: timedelta, renew: timedelta) -> timedelta:
    """How often a held lease is renewed: the configured interval, or lease/3 when the configured
    one would let the lease lapse between renewals (seed rule)."""
    if renew <= timedelta(0) or renew >= lease:
        return lease / 3
    return renew


def format_bytes(size: int) -> str:
    """``67108864`` → ``64 MiB`` (for messages)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


SIGKILL_EXIT_CODE = 128 + 9
"""A container's exit code when its process was killed by SIGKILL (the OOM killer's signal)."""


def container_exit_outcome(exit_code: int, *, oom_killed: bool = False, oom_reported: bool = True,
                           memory_limit_bytes: int | None = None) -> RunOutcome:
    """Outcome of a container that exited: 0 completes; the OOM killer and other non-zero codes
    are USER failures (the exit code is in the message).  ``oom_reported=False`` marks an OOM kill
    the runner inferred (a SIGKILL under a memory limit that nobody requested) because the engine
    did not report it."""
    limit = f"limit {format_bytes(memory_limit_bytes)}" if memory_limit_bytes else "memory limit"
    if oom_killed and oom_reported:
        return RunOutcome.failed(
            ExecutionErrorCode.CONTAINER_OUT_OF_MEMORY,
            f"container ran out of memory ({limit}) and was killed, exit code {exit_code}",
        )
    if oom_killed:
        return RunOutcome.failed(
            ExecutionErrorCode.CONTAINER_OUT_OF_MEMORY,
            f"container was killed by SIGKILL (exit code {exit_code}) that nobody requested: it ran "
            f"out of memory ({limit}); the engine did not report the OOM kill",
        )
    if exit_code == 0:
        return RunOutcome.success()
    message = f"container exited with non-zero code: {exit_code}"
    if exit_code == SIGKILL_EXIT_CODE and memory_limit_bytes:
        # A SIGKILL that was requested (docker kill / stop), or a child the script killed itself.
        message += (f" (killed by SIGKILL; if not by you, it may have exceeded its memory limit of "
                    f"{format_bytes(memory_limit_bytes)})")
    return RunOutcome.failed(ExecutionErrorCode.CONTAINER_EXIT_NONZERO, message)


def container_timeout_outcome(timeout: timedelta) -> RunOutcome:
    """The run was stopped because it exceeded the payload's timeout (USER)."""
    return RunOutcome.failed(ExecutionErrorCode.CONTAINER_TIMED_OUT,
                             f"container execution timed out after {timeout.total_seconds():g}s")


class ContainerState(_Frozen):
    """What Docker says about a job's container (``docker inspect``), for recovery."""

    container_id: str
    running: bool
    started: bool = True  # False for a container that was created but never started
    exit_code: int | None = None
    oom_killed: bool = False
    memory_limit_bytes: int | None = None


def recovered_outcome(state: ContainerState | None, *, had_container_id: bool) -> RunOutcome:
    """Outcome of a RUNNING job whose lease expired (its worker died), from the container's real
    state (reference §6.3).  Only an exited container tells how the run ended; everything else is
    a SYSTEM failure (released for retry, or failed at the attempt limit)."""
    if state is None:
        if had_container_id:
            return RunOutcome.failed(ExecutionErrorCode.CONTAINER_MISSING,
                                     "job lease expired and its container no longer exists")
        return RunOutcome.failed(ExecutionErrorCode.LEASE_EXPIRED,
                                 "job lease expired without a container id")
    if not state.started:
        return RunOutcome.failed(ExecutionErrorCode.LEASE_EXPIRED,
                                 "job lease expired before its container was started")
    if state.running or state.exit_code is None:
        return RunOutcome.failed(ExecutionErrorCode.LEASE_EXPIRED,
                                 "job lease expired while container was still running")
    return container_exit_outcome(state.exit_code, oom_killed=state.oom_killed,
                                  memory_limit_bytes=state.memory_limit_bytes)
