"""List filters for workflows and jobs, with the reference's 400 rules (§2.2, §0.2 items 5-6).

The ``parse`` constructors take raw query-string values (or already typed ones) and raise
:class:`~domain.errors.Invalid` naming the parameter.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from domain.enums import JobStatus, JobTrigger, WorkflowBuildStatus, WorkflowKind
from domain.errors import Invalid

INT32_MAX = 2**31 - 1


class WorkflowFilters(BaseModel):
    """``query`` (name contains, case-insensitive), ``kind``, ``build_status`` (implies not terminated),
    ``terminated`` (``True`` = only terminated; ``False`` = no filter, as in the seed),
    ``interval_min``/``interval_max`` (0 = unbounded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str = ""
    kind: WorkflowKind | None = None
    build_status: WorkflowBuildStatus | None = None
    terminated: bool = False
    interval_min: int = 0
    interval_max: int = 0

    @classmethod
    def parse(
        cls,
        *,
        query: str | None = None,
        kind: str | WorkflowKind | None = None,
        build_status: str | WorkflowBuildStatus | None = None,
        terminated: str | bool | None = None,
        interval_min: str | int | None = None,
        interval_max: str | int | None = None,
    ) -> WorkflowFilters:
        parsed_kind = _enum(WorkflowKind, kind, "kind")
        parsed_status = _enum(WorkflowBuildStatus, build_status, "build_status")
        parsed_terminated = _bool(terminated, "terminated")
        if parsed_terminated and parsed_status is not None:
            raise Invalid("build_status cannot be combined with terminated=true")
        low = _interval_bound(interval_min, "interval_min")
        high = _interval_bound(interval_max, "interval_max")
        # The seed compares with max = 0 when it is absent, so a lone interval_min is rejected too.
        if low > high:
            if high == 0:
                raise Invalid("interval_max is required when interval_min is given")
            raise Invalid("interval_min must not exceed interval_max")
        return cls(
            query=(query or "").strip(),
            kind=parsed_kind,
            build_status=parsed_status,
            terminated=parsed_terminated,
            interval_min=low,
            interval_max=high,
        )

    def cache_key(self) -> str:
        """Stable text identifying this filter set (part of the list-page cache key)."""
        return (
            f"query={self.query}&kind={self.kind or ''}&build_status={self.build_status or ''}"
            f"&is_terminated={str(self.terminated).lower()}"
            f"&interval_min={self.interval_min}&interval_max={self.interval_max}"
        )


class JobFilters(BaseModel):
    """``status`` and ``trigger`` filters of the job list."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: JobStatus | None = None
    trigger: JobTrigger | None = None

    @classmethod
    def parse(
        cls, *, status: str | JobStatus | None = None, trigger: str | JobTrigger | None = None
    ) -> JobFilters:
        return cls(status=_enum(JobStatus, status, "status"), trigger=_enum(JobTrigger, trigger, "trigger"))


def _enum(enum: Any, value: Any, name: str) -> Any:
    if value is None or value == "":
        return None
    try:
        return enum(value)
    except ValueError:
        allowed = "|".join(member.value for member in enum)
        raise Invalid(f"{name} must be one of {allowed}") from None


def _bool(value: str | bool | None, name: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    # Go's strconv.ParseBool spellings.
    lowered = value.strip()
    if lowered in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if lowered in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise Invalid(f"{name} must be true or false")


def _interval_bound(value: str | int | None, name: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise Invalid(f"{name} must be an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise Invalid(f"{name} must be an integer") from None
    if value < 0:
        raise Invalid(f"{name} must not be negative")
    if value > INT32_MAX:
        raise Invalid(f"{name} is too large")
    return value
