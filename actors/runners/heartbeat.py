"""HEARTBEAT runner: an HTTP GET probe (reference §4).

GET ``endpoint`` with the payload's headers, redirects followed (at most 10, like Go's client), the
whole exchange bounded by the payload's ``timeout``.  The status equal to ``expected_status_code``
completes the job; any other status is a USER failure; a connection error or timeout is a SYSTEM
failure (retried); an endpoint that is not an http(s) URL is a USER failure.  The body is never
read.  Produces no log lines.
"""

from __future__ import annotations

import asyncio

import httpx

from actors.runners.context import LogSink, RunContext
from domain.enums import ExecutionErrorCode
from domain.execution import RunOutcome
from domain.payloads import HeartbeatPayload

MAX_REDIRECTS = 10


class HeartbeatRunner:
    """Runs HEARTBEAT jobs over one shared ``httpx.AsyncClient`` (keep-alive across jobs)."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this runner created it."""
        if self._owns_client:
            await self._client.aclose()

    async def run(self, ctx: RunContext, payload: HeartbeatPayload, logs: LogSink) -> RunOutcome:
        """Probe the endpoint once and classify the result."""
        del ctx, logs  # a probe has no job-specific handle and writes no lines
        seconds = payload.timeout.total_seconds()
        headers = [(name, value) for name, values in payload.headers.items() for value in values]
        try:
            async with asyncio.timeout(seconds):
                request = self._client.build_request("GET", payload.endpoint, headers=headers,
                                                     timeout=httpx.Timeout(seconds))
                response = await self._client.send(request, stream=True)
                await response.aclose()
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as err:
            return RunOutcome.failed(ExecutionErrorCode.INVALID_ENDPOINT,
                                     f"invalid heartbeat endpoint {payload.endpoint!r}: {err}")
        except httpx.TooManyRedirects:
            return RunOutcome.failed(ExecutionErrorCode.INVALID_ENDPOINT,
                                     f"heartbeat endpoint {payload.endpoint!r}: more than "
                                     f"{MAX_REDIRECTS} redirects")
        except TimeoutError:
            return RunOutcome.failed(ExecutionErrorCode.ENDPOINT_UNREACHABLE,
                                     f"heartbeat request timed out after {seconds:g}s")
        except httpx.HTTPError as err:
            # Transport errors (refused, reset, DNS, read/connect timeouts): worth a retry.
            return RunOutcome.failed(ExecutionErrorCode.ENDPOINT_UNREACHABLE,
                                     f"heartbeat request failed: {type(err).__name__}: {err}")
        if response.status_code != payload.expected_status_code:
            return RunOutcome.failed(
                ExecutionErrorCode.UNEXPECTED_STATUS,
                f"unexpected status code: got {response.status_code}, "
                f"expected {payload.expected_status_code}",
            )
        return RunOutcome.success()
