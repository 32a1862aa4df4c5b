"""One router per resource; :data:`ROUTERS` is the order they are mounted in."""

from __future__ import annotations

from fastapi import APIRouter

from serve_apps.gateway.routers import (
    analytics,
    auth,
    health,
    job_logs,
    jobs,
    notifications,
    users,
    workflows,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    auth.router,
    users.router,
    workflows.router,
    jobs.router,
    job_logs.router,
    notifications.router,
    analytics.router,
)
