"""End-to-end fixtures for the HTTP API: the real ``chronoverse`` Serve application deployed with
:func:`serve_apps.app.deploy_serve` on the shared local Ray cluster (``ray_cluster``), talking to
the ``stack`` fixture's PostgreSQL and Redis, driven over real HTTP with httpx.

* ``serve_api`` (session) — deploys once on free ports; yields an :class:`ApiTarget`; shuts Serve
  down at the end.
* ``api`` — helpers (:class:`Api`): register users, make clients, valid workflow bodies.
* ``api_user`` / ``other_user`` — freshly registered users, each with its own cookie jar, CSRF
  token and client address (``X-Forwarded-For``: the deployment trusts it, as behind
  ``deploy/nginx``, because the tests play that proxy), so login rate limits never leak between
  tests.
* ``db`` — an asyncpg connection to the stack's database, to assert what the API wrote.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest
import pytest_asyncio
from listen_ports import listen_port

from domain.config import GrpcConfig, Settings
from domain.topology import ClusterSpec

#: Origin the e2e deployment allows for CORS (checklist item 63).
ALLOWED_ORIGIN = "http://dashboard.example:3001"
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class ApiTarget:
    """Where the deployed app listens and the settings it was deployed with."""

    base_url: str
    settings: Settings
    spec: ClusterSpec


def _e2e_settings(stack_settings: Settings) -> Settings:
    server = stack_settings.server.model_copy(
        update={
            "host": "127.0.0.1",
            "port": listen_port(),  # bound when Serve starts: see tests/listen_ports.py
            "allowed_origins": f"{ALLOWED_ORIGIN},",
            # The tests are the trusted proxy: each client says its own address (per-test limits).
            "trust_forwarded_for": True,
        }
    )
    grpc = GrpcConfig(host="127.0.0.1", port=listen_port())
    return stack_settings.model_copy(update={"server": server, "grpc": grpc})


def _wait_for_http(base_url: str, timeout: float = 30.0) -> None:
    # The proxy may start answering a moment after the application reports RUNNING.
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"the Serve app did not answer {base_url}/healthz within {timeout:.0f}s")


@pytest.fixture(scope="session")
def serve_api(stack: Any, ray_cluster: Any) -> Iterator[ApiTarget]:
    """The Serve app, deployed exactly as ``chronoverse up`` does, on free ports."""
    from ray import serve

    from serve_apps.app import deploy_serve

    settings = _e2e_settings(stack.settings)
    deploy_serve(settings, stack.spec, blocking_wait=True)
    base_url = f"http://127.0.0.1:{settings.server.port}"
    try:
        _wait_for_http(base_url)
        yield ApiTarget(base_url=base_url, settings=settings, spec=stack.spec)
    finally:
        serve.shutdown()


_addresses = iter(ipaddress.ip_network("10.77.0.0/16").hosts())


@dataclass
class ApiUser:
    """A registered user: an httpx client holding its session cookie, and its CSRF token."""

    client: httpx.AsyncClient
    email: str
    user_id: UUID
    csrf_token: str
    address: str

    def mutating(self, **headers: str) -> dict[str, str]:
        """Headers of a mutating request: the CSRF token plus ``headers``."""
        return {"X-CSRF-Token": self.csrf_token, **headers}

    def keyed(self, key: str | None = None) -> dict[str, str]:
        """CSRF token and an ``Idempotency-Key`` (fresh unless given)."""
        return self.mutating(**{"Idempotency-Key": key or secrets.token_hex(8)})


class Api:
    """Helpers bound to the deployed app (yielded by the ``api`` fixture)."""

    password = PASSWORD

    def __init__(self, target: ApiTarget) -> None:
        self.target = target
        self._clients: list[httpx.AsyncClient] = []

    @staticmethod
    def new_email() -> str:
        return f"e2e-{secrets.token_hex(6)}@example.com"

    @staticmethod
    def new_address() -> str:
        """A client address nobody else uses (sent as ``X-Forwarded-For``)."""
        return str(next(_addresses))

    def client(self, *, address: str | None = None) -> httpx.AsyncClient:
        """A client with its own cookie jar and client address (closed after the test)."""
        client = httpx.AsyncClient(
            base_url=self.target.base_url,
            timeout=30,
            headers={"X-Forwarded-For": address or self.new_address()},
        )
        self._clients.append(client)
        return client

    async def register(self, email: str | None = None) -> ApiUser:
        """Register a fresh user and keep its session."""
        address = self.new_address()
        client = self.client(address=address)
        email = email or self.new_email()
        response = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        body = response.json()
        return ApiUser(client, email, UUID(body["user_id"]), body["csrf_token"], address)

    @staticmethod
    def heartbeat_body(**overrides: Any) -> dict[str, Any]:
        """A valid HEARTBEAT create body."""
        body: dict[str, Any] = {
            "name": f"hb-{secrets.token_hex(3)}",
            "payload": '{"endpoint": "http://127.0.0.1:9/health", "expected_status_code": 200}',
            "kind": "HEARTBEAT",
            "interval": 5,
            "max_consecutive_job_failures_allowed": 3,
        }
        body.update(overrides)
        return body

    @staticmethod
    def container_body(**overrides: Any) -> dict[str, Any]:
        """A valid CONTAINER create body."""
        body: dict[str, Any] = {
            "name": f"ct-{secrets.token_hex(3)}",
            "payload": '{"image": "local/busybox:1", "cmd": ["echo", "hi"]}',
            "kind": "CONTAINER",
            "interval": 5,
            "max_consecutive_job_failures_allowed": 3,
        }
        body.update(overrides)
        return body

    async def create_workflow(self, user: ApiUser, body: dict[str, Any] | None = None) -> UUID:
        """Create a workflow (201) and return its id."""
        response = await user.client.post(
            "/workflows", json=body or self.heartbeat_body(), headers=user.keyed()
        )
        assert response.status_code == 201, response.text
        return UUID(response.json()["id"])

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest_asyncio.fixture
async def api(serve_api: ApiTarget) -> AsyncIterator[Api]:
    """Helpers for one test; every client made through it is closed afterwards."""
    helper = Api(serve_api)
    try:
        yield helper
    finally:
        await helper.aclose()


@pytest_asyncio.fixture
async def api_user(api: Api) -> ApiUser:
    """A freshly registered user."""
    return await api.register()


@pytest_asyncio.fixture
async def other_user(api: Api) -> ApiUser:
    """A second freshly registered user (isolation tests)."""
    return await api.register()


@pytest_asyncio.fixture
async def db(serve_api: ApiTarget) -> AsyncIterator[Any]:
    """A connection to the application database (the app's JSON codecs)."""
    from store.postgres import connect

    conn = await connect(serve_api.settings.postgres, application_name="e2e-tests")
    try:
        yield conn
    finally:
        await conn.close()
