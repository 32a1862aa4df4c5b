"""The one error body of the HTTP API (SPEC §5.1): ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    """``code`` is a stable machine-readable string; ``message`` is for humans and names the field."""

    code: str = Field(examples=["invalid_argument"])
    message: str = Field(examples=["interval must be between 1 and 10080 minutes"])


class ErrorResponse(BaseModel):
    """Every non-2xx response has this body."""

    error: ErrorDetail
