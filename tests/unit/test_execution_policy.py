"""domain.execution: USER/SYSTEM classification, system-retry backoff and terminal decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.config import ExecutionWorkerConfig
from domain.enums import ExecutionErrorCode, FailureKind
from domain.execution import (
    MAX_ERROR_MESSAGE_CHARS,
    Complete,
    ContainerState,
    Fail,
    Release,
    RetryPolicy,
    RunOutcome,
    container_exit_outcome,
    container_timeout_outcome,
    failure_kind,
    recovered_outcome,
    renew_interval,
    worker_slots,
)

POLICY = RetryPolicy()


def test_every_error_code_is_classified() -> None:
    for code in ExecutionErrorCode:
        assert failure_kind(code) in (FailureKind.USER, FailureKind.SYSTEM)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE, FailureKind.SYSTEM),
        (ExecutionErrorCode.ENDPOINT_UNREACHABLE, FailureKind.SYSTEM),
        (ExecutionErrorCode.CANCELED, FailureKind.SYSTEM),
        (ExecutionErrorCode.LEASE_EXPIRED, FailureKind.SYSTEM),
        (ExecutionErrorCode.WORKFLOW_NOT_READY, FailureKind.SYSTEM),
        (ExecutionErrorCode.CONTAINER_TIMED_OUT, FailureKind.USER),
        (ExecutionErrorCode.CONTAINER_EXIT_NONZERO, FailureKind.USER),
        (ExecutionErrorCode.CONTAINER_OUT_OF_MEMORY, FailureKind.USER),
        (ExecutionErrorCode.UNEXPECTED_STATUS, FailureKind.USER),
        (ExecutionErrorCode.IMAGE_NOT_FOUND, FailureKind.USER),
        (ExecutionErrorCode.INVALID_ENDPOINT, FailureKind.USER),
    ],
)
def test_failure_classification_follows_the_reference(code: ExecutionErrorCode, kind: FailureKind) -> None:
    assert failure_kind(code) is kind


def test_container_timeout_is_a_user_failure_mentioning_the_timeout() -> None:
    outcome = container_timeout_outcome(timedelta(seconds=2))
    assert outcome.failure is not None
    assert outcome.failure.kind is FailureKind.USER
    assert "container execution timed out" in outcome.failure.message


def test_success_completes() -> None:
    assert POLICY.decide(RunOutcome.success(), attempts=1) == Complete()


def test_user_failure_fails_without_retry_on_first_attempt() -> None:
    outcome = RunOutcome.failed(ExecutionErrorCode.CONTAINER_EXIT_NONZERO, "exit 3")
    decision = POLICY.decide(outcome, attempts=1)
    assert decision == Fail(failure_kind=FailureKind.USER,
                            error_code=ExecutionErrorCode.CONTAINER_EXIT_NONZERO, error_message="exit 3")


def test_system_failures_back_off_30s_then_60s_then_fail_system() -> None:
    outcome = RunOutcome.failed(ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE, "docker down")
    first = POLICY.decide(outcome, attempts=1)
    second = POLICY.decide(outcome, attempts=2)
    third = POLICY.decide(outcome, attempts=3)
    assert isinstance(first, Release) and first.retry_after == timedelta(seconds=30)
    assert isinstance(second, Release) and second.retry_after == timedelta(seconds=60)
    assert third == Fail(failure_kind=FailureKind.SYSTEM,
                         error_code=ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE,
                         error_message="docker down")


def test_backoff_doubles_and_is_capped_at_eight_times_the_base() -> None:
    assert [POLICY.backoff(n).total_seconds() for n in (0, 1, 2, 3, 4, 5, 50)] == [
        30, 30, 60, 120, 240, 240, 240]


def test_policy_from_config_uses_the_configured_limit_and_base() -> None:
    cfg = ExecutionWorkerConfig(system_retry_limit=5, system_retry_backoff=timedelta(seconds=1))
    policy = RetryPolicy.from_config(cfg)
    outcome = RunOutcome.failed(ExecutionErrorCode.INTERNAL, "boom")
    assert isinstance(policy.decide(outcome, attempts=4), Release)
    assert isinstance(policy.decide(outcome, attempts=5), Fail)
    assert policy.backoff(10) == timedelta(seconds=8)


def test_error_messages_are_truncated_to_4096_characters() -> None:
    outcome = RunOutcome.failed(ExecutionErrorCode.CONTAINER_EXIT_NONZERO, "x" * 10_000)
    decision = POLICY.decide(outcome, attempts=1)
    assert isinstance(decision, Fail)
    assert len(decision.error_message) == MAX_ERROR_MESSAGE_CHARS


def test_exit_zero_completes_and_nonzero_fails_with_the_code() -> None:
    assert container_exit_outcome(0).completed
    failed = container_exit_outcome(3)
    assert failed.failure is not None
    assert failed.failure.code is ExecutionErrorCode.CONTAINER_EXIT_NONZERO
    assert failed.failure.message.endswith(": 3")


def test_oom_kill_is_a_user_failure_naming_the_limit() -> None:
    outcome = container_exit_outcome(137, oom_killed=True, memory_limit_bytes=64 * 1024**2)
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.CONTAINER_OUT_OF_MEMORY
    assert outcome.failure.kind is FailureKind.USER
    assert "out of memory (limit 64 MiB)" in outcome.failure.message


def test_an_inferred_oom_kill_is_an_oom_failure_that_says_the_engine_did_not_report_it() -> None:
    outcome = container_exit_outcome(137, oom_killed=True, oom_reported=False,
                                     memory_limit_bytes=16 * 1024**2)
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.CONTAINER_OUT_OF_MEMORY
    assert outcome.failure.kind is FailureKind.USER
    assert outcome.failure.message == (
        "container was killed by SIGKILL (exit code 137) that nobody requested: it ran out of memory "
        "(limit 16 MiB); the engine did not report the OOM kill")


def test_a_requested_sigkill_under_a_memory_limit_still_mentions_the_limit() -> None:
    outcome = container_exit_outcome(137, memory_limit_bytes=16 * 1024**2)
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.CONTAINER_EXIT_NONZERO
    assert outcome.failure.message == (
        "container exited with non-zero code: 137 (killed by SIGKILL; if not by you, it may have "
        "exceeded its memory limit of 16 MiB)")
    # Without a limit, or with another code, there is nothing to suggest.
    for code, limit in ((137, None), (1, 16 * 1024**2)):
        other = container_exit_outcome(code, memory_limit_bytes=limit)
        assert other.failure is not None and "memory" not in other.failure.message


def test_recovery_without_a_container_is_a_system_failure() -> None:
    outcome = recovered_outcome(None, had_container_id=False)
    assert outcome.failure is not None and outcome.failure.kind is FailureKind.SYSTEM
    assert "without a container id" in outcome.failure.message
    missing = recovered_outcome(None, had_container_id=True)
    assert missing.failure is not None and missing.failure.code is ExecutionErrorCode.CONTAINER_MISSING


def test_recovery_of_a_running_container_is_a_system_failure() -> None:
    outcome = recovered_outcome(ContainerState(container_id="c", running=True), had_container_id=True)
    assert outcome.failure is not None and outcome.failure.code is ExecutionErrorCode.LEASE_EXPIRED


def test_recovery_of_a_never_started_container_is_a_system_failure() -> None:
    outcome = recovered_outcome(ContainerState(container_id="c", running=False, started=False, exit_code=0),
                                had_container_id=True)
    assert outcome.failure is not None and outcome.failure.kind is FailureKind.SYSTEM


def test_recovery_of_an_exited_container_uses_its_exit_code() -> None:
    done = recovered_outcome(ContainerState(container_id="c", running=False, exit_code=0),
                             had_container_id=True)
    failed = recovered_outcome(ContainerState(container_id="c", running=False, exit_code=2),
                               had_container_id=False)
    assert done.completed
    assert failed.failure is not None and failed.failure.kind is FailureKind.USER


def test_zero_concurrency_means_four_slots() -> None:
    assert worker_slots(0) == 4
    assert worker_slots(7) == 7


def test_renew_interval_falls_back_to_a_third_of_the_lease() -> None:
    lease = timedelta(seconds=30)
    assert renew_interval(lease, timedelta(seconds=10)) == timedelta(seconds=10)
    assert renew_interval(lease, timedelta(seconds=30)) == timedelta(seconds=10)
    assert renew_interval(lease, timedelta(seconds=45)) == timedelta(seconds=10)
