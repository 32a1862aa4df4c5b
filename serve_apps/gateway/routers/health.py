"""``/healthz`` (the gateway answers) and ``/readyz`` (PostgreSQL and Redis answer)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serve_apps.gateway.dependencies import State
from serve_apps.schemas.health import Health, Readiness

router = APIRouter(tags=["health"])

#: How long each dependency may take to answer a readiness probe.
PROBE_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """Always 200 while the gateway process serves requests."""
    return Health()


async def _probe_postgres(state: State) -> None:
    pool = await state.resources.pool()
    await pool.fetchval("SELECT 1")


async def _probe_redis(state: State) -> None:
    await state.resources.redis().ping()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency did not answer"}},
    summary="Readiness",
)
async def readyz(state: State) -> JSONResponse:
    """200 when PostgreSQL and Redis both answer within 2 s, else 503 naming the failing one."""
    checks: dict[str, str] = {}
    for name, probe in (("postgres", _probe_postgres), ("redis", _probe_redis)):
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await probe(state)
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            checks[name] = f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
