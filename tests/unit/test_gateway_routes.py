"""HTTP shape of the gateway without Ray or services: each route's status, body and headers, the
auth/CSRF/idempotency rules, and that every request makes exactly one service call carrying the
caller and the trace.  The five services are recording stand-ins; credentials are held in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from domain.config import ServerConfig, Settings
from domain.csrf import issue_csrf_token, verify_csrf_token
from domain.enums import JobStatus, JobTrigger, NotificationPreference, WorkflowBuildStatus, WorkflowKind
from domain.errors import NotFound, PermissionDenied, RateLimited, Unauthenticated
from domain.ids import uuid7
from domain.models import Session
from serve_apps.gateway.app import create_gateway_app
from serve_apps.gateway.auth import Authenticator, ClientAddressPolicy, CookiePolicy, Principal
from serve_apps.gateway.clients import Services
from serve_apps.resources import ServiceResources
from serve_apps.schemas.auth import UserIdentity
from serve_apps.schemas.jobs import JobCreated, JobList, JobOut
from serve_apps.schemas.users import UserProfile
from serve_apps.schemas.workflows import WorkflowCreated, WorkflowDetail, WorkflowList
from serve_apps.services.context import CallContext

SECRET = "unit-secret"
NOW = datetime(2025, 1, 2, 3, 4, 5, 123456)
USER = uuid7()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class MemoryAuth(Authenticator):
    """Sessions and tokens in dicts; CSRF with the real HMAC scheme of :mod:`domain.csrf`."""

    def __init__(self) -> None:
        self.session_users: dict[str, UUID] = {}
        self.tokens: dict[str, UUID] = {}
        self.login_checks: list[tuple[str, str | None]] = []
        self.refuse_logins = False

    async def from_session(self, session_id: str | None) -> Principal:
        if not session_id or session_id not in self.session_users:
            raise Unauthenticated("session not found")
        return Principal(self.session_users[session_id], "session", session_id)

    async def from_bearer(self, token: str) -> Principal:
        if token not in self.tokens:
            raise Unauthenticated("invalid token")
        return Principal(self.tokens[token], "token")

    def check_csrf(self, principal: Principal, token: str | None) -> None:
        if principal.method == "session":
            if not token:
                raise PermissionDenied("missing CSRF token: send it in the X-CSRF-Token header")
            if not verify_csrf_token(SECRET, principal.session_id or "", token, timedelta(hours=2)):
                raise PermissionDenied("invalid or expired CSRF token")

    async def check_login_allowed(self, email: str, client: str | None) -> None:
        self.login_checks.append((email, client))
        if self.refuse_logins:
            raise RateLimited("too many login attempts, try again later", retry_after_s=42)

    async def login_succeeded(self, email: str, client: str | None) -> None:
        pass

    async def start_session(self, user_id: UUID) -> Session:
        session_id = f"s-{len(self.session_users)}"
        self.session_users[session_id] = user_id
        return Session(
            session_id=session_id,
            user_id=user_id,
            csrf_token=issue_csrf_token(SECRET, session_id),
            expires_at=NOW + timedelta(hours=2),
        )

    async def end_session(self, principal: Principal) -> None:
        self.session_users.pop(principal.session_id or "", None)


class Recorder:
    """Stands in for one service: records ``(method, ctx, args)`` and answers from ``responses``."""

    def __init__(
        self, log: list[tuple[str, CallContext, tuple[Any, ...]]], responses: dict[str, Any]
    ) -> None:
        self._log = log
        self._responses = responses

    def __getattr__(self, name: str) -> Any:
        async def call(ctx: CallContext, *args: Any) -> Any:
            self._log.append((name, ctx, args))
            answer = self._responses.get(name)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


WORKFLOW_ID = uuid7()
JOB_ID = uuid7()


def _detail() -> WorkflowDetail:
    return WorkflowDetail(
        id=WORKFLOW_ID,
        name="probe",
        payload='{"endpoint":"http://x"}',
        kind=WorkflowKind.HEARTBEAT,
        build_status=WorkflowBuildStatus.QUEUED,
        interval=5,
        consecutive_job_failures_count=0,
        max_consecutive_job_failures_allowed=3,
        created_at=NOW,
        updated_at=NOW,
        terminated_at=None,
        log_retention=False,
        log_retention_ttl=None,
        generation=1,
    )


def _job(status: JobStatus) -> JobOut:
    return JobOut(
        id=JOB_ID,
        workflow_id=WORKFLOW_ID,
        status=status,
        trigger=JobTrigger.MANUAL,
        scheduled_at=NOW,
        started_at=None,
        completed_at=None,
        created_at=NOW,
        updated_at=NOW,
        attempts=0,
        failure_kind=None,
        last_error_code=None,
        last_error_message=None,
    )


class Harness:
    def __init__(
        self, job_status: JobStatus = JobStatus.PENDING, *, trust_forwarded_for: bool = False
    ) -> None:
        self.calls: list[tuple[str, CallContext, tuple[Any, ...]]] = []
        self.auth = MemoryAuth()
        responses: dict[str, Any] = {
            "register": UserIdentity(user_id=USER),
            "login": UserIdentity(user_id=USER),
            "get_user": UserProfile(
                email="a@b.co",
                notification_preference=NotificationPreference.ALERTS,
                created_at=NOW,
                updated_at=NOW,
            ),
            "create_workflow": WorkflowCreated(id=WORKFLOW_ID),
            "get_workflow": _detail(),
            "list_workflows": WorkflowList(workflows=[], cursor=None),
            "schedule_job": JobCreated(id=JOB_ID),
            "get_job": _job(job_status),
            "list_jobs": JobList(jobs=[], cursor=None),
            "get_workflow_analytics": NotFound("analytics not found for workflow"),
        }
        recorder = Recorder(self.calls, responses)
        services = Services(*(cast(Any, recorder) for _ in range(5)))
        server = ServerConfig(csrf_hmac_secret=SECRET, trust_forwarded_for=trust_forwarded_for)  # type: ignore[arg-type]
        settings = Settings(server=server)
        app = create_gateway_app(settings, services, ServiceResources(settings, name="unit"), auth=self.auth)
        self.client = TestClient(app, client=("127.0.0.1", 50000))

    def login(self) -> str:
        response = self.client.post("/auth/login", json={"email": "a@b.co", "password": "password123"})
        assert response.status_code == 201
        self.calls.clear()
        return str(response.json()["csrf_token"])

    def only_call(self) -> tuple[str, CallContext, tuple[Any, ...]]:
        assert len(self.calls) == 1, [c[0] for c in self.calls]
        return self.calls[0]


def test_register_opens_a_session_cookie_and_returns_the_csrf_token() -> None:
    h = Harness()
    response = h.client.post("/auth/register", json={"email": "a@b.co", "password": "password123"})
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "user_id": str(USER),
        "csrf_token": body["csrf_token"],
        "expires_at": "2025-01-02T05:04:05.123456Z",
    }
    assert response.headers["X-CSRF-Token"] == body["csrf_token"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("session=s-0;") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Max-Age=7200" in cookie and "Secure" not in cookie
    name, ctx, args = h.only_call()
    assert name == "register" and ctx.user_id is None and args[0].email == "a@b.co"


@pytest.mark.parametrize("password", ["short", "x" * 73])
def test_credentials_are_validated_before_any_call(password: str) -> None:
    h = Harness()
    response = h.client.post("/auth/register", json={"email": "a@b.co", "password": password})
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("password")
    assert h.calls == []


def test_login_is_refused_with_429_before_checking_the_password() -> None:
    h = Harness(trust_forwarded_for=True)
    h.auth.refuse_logins = True
    response = h.client.post(
        "/auth/login",
        json={"email": "a@b.co", "password": "password123"},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert response.status_code == 429 and response.headers["Retry-After"] == "42"
    assert h.calls == []
    assert h.auth.login_checks == [("a@b.co", "203.0.113.9")]


def test_login_ignores_a_client_supplied_forwarded_for_by_default() -> None:
    h = Harness()
    response = h.client.post(
        "/auth/login",
        json={"email": "a@b.co", "password": "password123"},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert response.status_code == 201
    assert h.auth.login_checks == [("a@b.co", None)]  # loopback peer, untrusted header: per e-mail only


def test_authenticated_read_makes_one_call_with_the_caller_and_the_trace() -> None:
    h = Harness()
    h.login()
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    response = h.client.get(f"/workflows/{WORKFLOW_ID}", headers={"traceparent": traceparent})
    assert response.status_code == 200
    assert response.json()["generation"] == 1 and response.json()["terminated_at"] is None
    name, ctx, args = h.only_call()
    assert name == "get_workflow" and ctx.user_id == USER and args[0].workflow_id == WORKFLOW_ID
    assert ctx.trace["traceparent"].split("-")[1] == TRACE_ID
    assert ctx.request_id == response.headers["X-Request-ID"]


def test_requests_without_credentials_are_401_and_reach_no_service() -> None:
    h = Harness()
    for method, path in [
        ("GET", "/users"),
        ("GET", "/workflows"),
        ("POST", "/workflows"),
        ("GET", "/analytics"),
    ]:
        response = h.client.request(method, path, json={})
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthenticated"
    assert h.calls == []


def test_session_mutations_need_the_sessions_csrf_token() -> None:
    h = Harness()
    csrf = h.login()
    missing = h.client.patch(f"/workflows/{WORKFLOW_ID}")
    assert missing.status_code == 403 and "X-CSRF-Token" in missing.json()["error"]["message"]
    other_session = issue_csrf_token(SECRET, "someone-else")
    assert (
        h.client.patch(f"/workflows/{WORKFLOW_ID}", headers={"X-CSRF-Token": other_session}).status_code
        == 403
    )
    assert h.calls == []
    ok = h.client.patch(f"/workflows/{WORKFLOW_ID}", headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 204 and ok.content == b""
    assert h.only_call()[0] == "terminate_workflow"


def test_bearer_tokens_need_no_csrf_token() -> None:
    h = Harness()
    h.auth.tokens["cvt_unit"] = USER
    response = h.client.patch(f"/workflows/{WORKFLOW_ID}", headers={"Authorization": "Bearer cvt_unit"})
    assert response.status_code == 204
    assert h.only_call()[1].user_id == USER
    assert h.client.get("/users", headers={"Authorization": "Token cvt_unit"}).status_code == 401


def test_idempotency_key_is_required_and_forwarded() -> None:
    h = Harness()
    csrf = h.login()
    body = {
        "name": "n",
        "payload": "{}",
        "kind": "HEARTBEAT",
        "interval": 5,
        "max_consecutive_job_failures_allowed": 3,
    }
    missing = h.client.post("/workflows", json=body, headers={"X-CSRF-Token": csrf})
    assert missing.status_code == 400 and "Idempotency-Key" in missing.json()["error"]["message"]
    schedule = h.client.post(f"/workflows/{WORKFLOW_ID}/jobs/schedule", headers={"X-CSRF-Token": csrf})
    assert schedule.status_code == 400
    assert h.calls == []
    created = h.client.post(
        "/workflows", json=body, headers={"X-CSRF-Token": csrf, "Idempotency-Key": " k-1 "}
    )
    assert created.status_code == 201 and created.json() == {"id": str(WORKFLOW_ID)}
    assert h.only_call()[2][0].idempotency_key == "k-1"


def test_list_query_parameters_become_validated_filters() -> None:
    h = Harness()
    h.login()
    response = h.client.get(
        "/workflows",
        params={
            "kind": "CONTAINER",
            "terminated": "t",
            "query": " ab ",
            "interval_min": 1,
            "interval_max": 9,
            "cursor": "c",
        },
    )
    assert response.status_code == 200 and response.json() == {"workflows": [], "cursor": None}
    query = h.only_call()[2][0]
    assert query.cursor == "c"
    assert (query.filters.kind, query.filters.terminated, query.filters.query) == (
        WorkflowKind.CONTAINER,
        True,
        "ab",
    )
    assert (query.filters.interval_min, query.filters.interval_max) == (1, 9)
    h.calls.clear()
    assert h.client.get("/workflows", params={"interval_min": 3}).status_code == 400
    assert h.client.get("/workflows", params={"kind": "CRON"}).status_code == 400
    assert h.calls == []


def test_validation_errors_are_400_and_name_the_field() -> None:
    h = Harness()
    csrf = h.login()
    headers = {"X-CSRF-Token": csrf, "Idempotency-Key": "k"}
    body = {
        "name": "n",
        "payload": "{}",
        "kind": "HEARTBEAT",
        "interval": "5",
        "max_consecutive_job_failures_allowed": 3,
    }
    response = h.client.post("/workflows", json=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("interval:")
    bad_id = h.client.get("/workflows/not-a-uuid")
    assert bad_id.status_code == 400 and bad_id.json()["error"]["message"].startswith("workflow_id:")
    empty = h.client.put("/notifications", json={"ids": []}, headers={"X-CSRF-Token": csrf})
    assert empty.status_code == 400 and empty.json()["error"]["message"].startswith("ids:")


@pytest.mark.parametrize(
    ("status", "cache"), [(JobStatus.RUNNING, "no-store"), (JobStatus.COMPLETED, "private, max-age=7200")]
)
def test_finished_jobs_are_cacheable(status: JobStatus, cache: str) -> None:
    h = Harness(job_status=status)
    h.login()
    response = h.client.get(f"/workflows/{WORKFLOW_ID}/jobs/{JOB_ID}")
    assert response.status_code == 200 and response.headers["Cache-Control"] == cache
    assert response.json()["status"] == status.value


def test_service_errors_map_to_json() -> None:
    h = Harness()
    h.login()
    response = h.client.get(f"/analytics/{WORKFLOW_ID}")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "analytics not found for workflow"}}


def test_logout_ends_the_session_and_clears_the_cookie() -> None:
    h = Harness()
    csrf = h.login()
    response = h.client.post("/auth/logout", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 204 and "Max-Age=0" in response.headers["set-cookie"]
    assert h.auth.session_users == {}
    assert h.calls == []


def test_openapi_documents_400_instead_of_422() -> None:
    spec = Harness().client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], f"{method} {path}"
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert {"ApiToken", "SessionCookie"} <= set(spec["components"]["securitySchemes"])
    create = spec["paths"]["/workflows"]["post"]
    key = next(p for p in create["parameters"] if p["name"] == "Idempotency-Key")
    assert key["required"] is True


def _request(peer: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "client": (peer, 5000), "headers": headers})


def test_client_address_is_the_peer_and_ignores_forwarded_for_by_default() -> None:
    policy = ClientAddressPolicy()
    assert policy.address(_request("203.0.113.50", "198.51.100.1")) == "203.0.113.50"
    assert policy.address(_request("10.0.0.2", None)) == "10.0.0.2"
    # A loopback peer may be a local proxy: unknown, whatever the (spoofable) header says.
    assert policy.address(_request("127.0.0.1", "198.51.100.1, 203.0.113.7")) is None
    assert policy.address(_request("::1", None)) is None


def test_client_address_behind_haproxy_is_unknown_unless_a_proxy_is_trusted() -> None:
    haproxy = ClientAddressPolicy(peer_is_proxy=True)
    assert haproxy.address(_request("10.0.0.2", "198.51.100.1")) is None
    assert haproxy.address(_request("127.0.0.1", None)) is None


def test_client_address_with_a_trusted_proxy_is_the_last_forwarded_entry() -> None:
    trusted = ClientAddressPolicy(trust_forwarded_for=True, peer_is_proxy=True)
    # The client may prepend anything; the trusted proxy appends the address it saw.
    assert trusted.address(_request("127.0.0.1", "198.51.100.1, 203.0.113.7")) == "203.0.113.7"
    assert trusted.address(_request("10.0.0.2", "203.0.113.8")) == "203.0.113.8"
    assert trusted.address(_request("127.0.0.1", None)) is None  # the proxy did not say


def test_cookie_policy_follows_the_host_url_and_same_site_mode() -> None:
    local = CookiePolicy.from_config(ServerConfig(host_url="http://localhost:8000"))
    assert (local.secure, local.domain, local.same_site, local.max_age) == (False, None, "strict", 7200)
    public = CookiePolicy.from_config(
        ServerConfig(
            host_url="https://cron.example.com", same_site_mode="LAX", session_expiry=timedelta(hours=1)
        )
    )
    assert (public.secure, public.domain, public.same_site, public.max_age) == (
        True,
        "cron.example.com",
        "lax",
        3600,
    )


def test_timestamps_render_as_rfc3339_utc() -> None:
    h = Harness()
    h.login()
    body = h.client.get(f"/workflows/{WORKFLOW_ID}").json()
    assert body["created_at"] == "2025-01-02T03:04:05.123456Z"
    assert datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")).tzinfo == UTC
