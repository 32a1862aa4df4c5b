"""Liveness and readiness bodies (SPEC §7)."""

from __future__ import annotations

from typing import Literal

from serve_apps.schemas.common import OutModel


class Health(OutModel):
    """``GET /healthz``: the gateway process answers."""

    status: Literal["ok"] = "ok"


class Readiness(OutModel):
    """``GET /readyz``: every dependency answered (``checks`` maps a dependency to ``ok`` or the
    reason it failed); 503 when one did not."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
