"""Field types shared by the response models: timestamps as RFC 3339 (nano) UTC strings, as the
seed renders them, and ids as UUID strings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema

from domain.event_keys import rfc3339nano

Timestamp = Annotated[
    datetime,
    PlainSerializer(rfc3339nano, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "examples": ["2025-01-02T03:04:05.123456Z"]},
        mode="serialization",
    ),
]
"""A naive-UTC (or aware) datetime rendered as ``2025-01-02T03:04:05.123456Z``."""


class ApiModel(BaseModel):
    """Base of request bodies: unknown fields are ignored, as the seed's JSON decoder does."""

    model_config = ConfigDict(extra="ignore")


class OutModel(BaseModel):
    """Base of response bodies and handle results: immutable, every field always present."""

    model_config = ConfigDict(frozen=True)
