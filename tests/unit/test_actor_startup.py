"""actors.lifecycle.Startup: an actor shell's asynchronous start, retried after a failure."""

from __future__ import annotations

import pytest

from actors.lifecycle import Startup


async def test_a_failed_start_is_retried_by_the_next_wait_and_settle_never_restarts() -> None:
    attempts: list[int] = []

    async def start() -> None:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise ConnectionError("PostgreSQL is down")

    startup = Startup(start)
    await startup.settle()  # the failed first attempt ends; shutdown would not start another
    assert attempts == [0]
    await startup.settle()
    assert attempts == [0]
    await startup.wait()  # a caller that needs it starts again
    assert attempts == [0, 1]
    await startup.wait()  # done: no third start
    assert attempts == [0, 1]


async def test_wait_raises_the_start_error_until_a_start_succeeds() -> None:
    async def start() -> None:
        raise ConnectionError("Redis is down")

    startup = Startup(start)
    with pytest.raises(ConnectionError):
        await startup.wait()
