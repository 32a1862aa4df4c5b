"""RAY runner: call ``module:function`` as a Ray task on the cluster (SPEC §5.7, our third kind).

The task is submitted with the payload's ``runtime_env``, ``num_cpus``, ``num_gpus`` and ``memory``
and runs as a *streaming generator*: inside the task the callable runs in a thread while
``sys.stdout``/``sys.stderr`` are replaced by line writers, and the task yields the captured lines
in small batches as they appear, then a final ``("done", error)`` item.  The runner numbers the
lines (one counter for both streams, like a container) and writes them to the job's log sink.

Outcomes: the callable returns → COMPLETED; it raises (or cannot be imported) → USER failure with
the exception's last line (the traceback goes to stderr); the wall clock exceeds the payload's
``timeout`` → the task is cancelled → USER failure; the worker process dies or the runtime env
cannot be set up by Ray itself → SYSTEM failure (retried).  A cancelled run (lease lost, drain)
force-cancels the task.  Output written below Python (C extensions, subprocesses) is not captured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError

from actors.runners.context import LogSink, RunContext
from domain.enums import ExecutionErrorCode, LogStream
from domain.execution import RunOutcome
from domain.log_lines import MAX_LINE_BYTES, LogLine, SequenceCounter
from domain.payloads import RayPayload

log = logging.getLogger(__name__)

#: Lines gathered inside the task before a batch is yielded (or every ``_FLUSH_S`` seconds).
_BATCH_LINES = 200
_FLUSH_S = 0.1


def _call_and_capture(module: str, function: str, args: list[Any], kwargs: dict[str, Any]
                      ) -> Iterator[tuple[str, Any]]:
    """The task body (runs in a Ray worker; standard library only).  Yields
    ``("lines", [(stream, text), …])`` batches and finally ``("done", error_or_None)``."""
    import importlib
    import io
    import queue
    import sys
    import threading
    import time
    import traceback

    lines: queue.Queue[tuple[str, str] | None] = queue.Queue()

    class LineWriter(io.TextIOBase):
        def __init__(self, stream: str) -> None:
            self.stream = stream
            self.pending = ""

        def write(self, text: str) -> int:
            self.pending += text
            while "\n" in self.pending:
                line, self.pending = self.pending.split("\n", 1)
                lines.put((self.stream, line.rstrip("\r")))
            return len(text)

        def close_line(self) -> None:
            if self.pending:
                lines.put((self.stream, self.pending))
                self.pending = ""

    result: dict[str, str | None] = {"error": None}

    def target() -> None:
        saved = sys.stdout, sys.stderr
        out, err = LineWriter("stdout"), LineWriter("stderr")
        sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
        try:
            value: Any = importlib.import_module(module)
            for part in function.split("."):
                value = getattr(value, part)
            value(*args, **kwargs)
        except BaseException as exc:
            traceback.print_exc()
            summary = traceback.format_exception_only(type(exc), exc)
            result["error"] = summary[-1].strip() if summary else type(exc).__name__
        finally:
            out.close_line()
            err.close_line()
            sys.stdout, sys.stderr = saved
            lines.put(None)

    threading.Thread(target=target, daemon=True, name="chronoverse-ray-task").start()
    finished = False
    while not finished:
        batch: list[tuple[str, str]] = []
        deadline = time.monotonic() + _FLUSH_S
        while len(batch) < _BATCH_LINES:
            try:
                item = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                finished = True
                break
            batch.append(item)
        if batch:
            yield ("lines", batch)
    yield ("done", result["error"])


class RayTaskRunner:
    """Runs RAY jobs as streaming Ray tasks (needs a connected Ray worker or driver)."""

    def __init__(self) -> None:
        self._remote = ray.remote(_call_and_capture)

    async def run(self, ctx: RunContext, payload: RayPayload, logs: LogSink) -> RunOutcome:
        options: dict[str, Any] = {
            "num_cpus": payload.num_cpus,
            "num_gpus": payload.num_gpus,
            "num_returns": "streaming",
            "max_retries": 0,  # a retry is our decision (SYSTEM failures), not Ray's
            "name": f"job-{ctx.job_id}",
        }
        if payload.memory:
            options["memory"] = payload.memory
        if payload.runtime_env:
            options["runtime_env"] = payload.runtime_env
        generator: Any = self._remote.options(**options).remote(
            payload.module, payload.function, list(payload.args), dict(payload.kwargs))
        counter = SequenceCounter()
        ended = False  # the task ran to its end: nothing to cancel
        error: str | None = None
        try:
            async with asyncio.timeout(payload.timeout.total_seconds()):
                async for ref in generator:
                    kind, value = await ref
                    if kind == "lines":
                        for stream, text in value:
                            await self._write(logs, counter, stream, text)
                    else:
                        error = value  # the last item: the generator ends right after it
                ended = True
            if error is not None:
                return RunOutcome.failed(ExecutionErrorCode.TASK_FAILED, f"{payload.callable}: {error}")
            return RunOutcome.success()
        except TimeoutError:
            return RunOutcome.failed(ExecutionErrorCode.TASK_TIMED_OUT,
                                     f"ray task timed out after {payload.timeout.total_seconds():g}s")
        except RayTaskError as err:
            # Errors raised by Ray while running the task body (not by the callable, which we catch).
            return RunOutcome.failed(ExecutionErrorCode.TASK_UNAVAILABLE, f"ray task error: {err}")
        except (TaskCancelledError, GetTimeoutError, ray.exceptions.RayError) as err:
            return RunOutcome.failed(ExecutionErrorCode.TASK_UNAVAILABLE,
                                     f"ray task did not finish: {type(err).__name__}: {err}")
        finally:
            # Only a task still running is cancelled.  Force-cancelling one that is just finishing
            # kills its worker process, which Ray may already have handed the next task (seen
            # in CI: the next job's task died with WorkerCrashedError).
            if not ended:
                with contextlib.suppress(Exception):
                    ray.cancel(generator, force=True)

    @staticmethod
    async def _write(logs: LogSink, counter: SequenceCounter, stream: str, text: str) -> None:
        data = text.encode("utf-8", "replace")
        if len(data) > MAX_LINE_BYTES:
            text = data[:MAX_LINE_BYTES].decode("utf-8", "ignore")
        if not text:
            return
        await logs.write(LogLine(stream=LogStream(stream), sequence_num=counter.next(), message=text,
                                 timestamp=datetime.now(UTC).replace(tzinfo=None)))
