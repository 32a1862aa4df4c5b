"""List filters and their 400 rules (reference §2.2, §0.2 items 5-6)."""

from __future__ import annotations

import pytest

from domain.enums import JobStatus, JobTrigger, WorkflowBuildStatus, WorkflowKind
from domain.errors import Invalid
from domain.filters import JobFilters, WorkflowFilters


def test_no_parameters_means_no_filter() -> None:
    assert WorkflowFilters.parse() == WorkflowFilters()
    assert WorkflowFilters.parse(query="", kind="", build_status="", terminated="") == WorkflowFilters()


def test_values_are_parsed() -> None:
    filters = WorkflowFilters.parse(
        query=" probe ", kind="CONTAINER", build_status="COMPLETED", interval_min="5", interval_max="10"
    )
    assert filters.query == "probe"
    assert filters.kind == WorkflowKind.CONTAINER
    assert filters.build_status == WorkflowBuildStatus.COMPLETED
    assert (filters.interval_min, filters.interval_max) == (5, 10)


@pytest.mark.parametrize(("params", "message"), [
    ({"kind": "CRON"}, "kind must be one of"),
    ({"build_status": "DONE"}, "build_status must be one of"),
    ({"terminated": "yes"}, "terminated must be true or false"),
    ({"terminated": "true", "build_status": "COMPLETED"}, "build_status cannot be combined with terminated"),
    ({"interval_min": "-1", "interval_max": "5"}, "interval_min must not be negative"),
    ({"interval_max": "-1"}, "interval_max must not be negative"),
    ({"interval_min": "2147483648", "interval_max": "2147483648"}, "interval_min is too large"),
    ({"interval_max": "2147483648"}, "interval_max is too large"),
    ({"interval_min": "abc"}, "interval_min must be an integer"),
    ({"interval_min": "10", "interval_max": "5"}, "interval_min must not exceed interval_max"),
    ({"interval_min": "5"}, "interval_max is required when interval_min is given"),
])
def test_bad_parameters_are_invalid(params: dict[str, str], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        WorkflowFilters.parse(**params)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value"), [("true", True), ("1", True), ("T", True), ("false", False), ("0", False)]
)
def test_terminated_accepts_go_bool_spellings(text: str, value: bool) -> None:
    assert WorkflowFilters.parse(terminated=text).terminated is value


def test_interval_max_alone_is_accepted() -> None:
    assert WorkflowFilters.parse(interval_max="30").interval_max == 30


def test_int32_max_is_accepted() -> None:
    assert WorkflowFilters.parse(interval_min=0, interval_max=2**31 - 1).interval_max == 2**31 - 1


def test_cache_key_distinguishes_filters() -> None:
    assert WorkflowFilters.parse(kind="HEARTBEAT").cache_key() != WorkflowFilters.parse().cache_key()
    assert WorkflowFilters.parse(query="a").cache_key() != WorkflowFilters.parse(query="b").cache_key()


def test_job_filters() -> None:
    assert JobFilters.parse(status="RUNNING", trigger="MANUAL") == JobFilters(
        status=JobStatus.RUNNING, trigger=JobTrigger.MANUAL
    )
    assert JobFilters.parse() == JobFilters()
    with pytest.raises(Invalid, match="status must be one of"):
        JobFilters.parse(status="DONE")
    with pytest.raises(Invalid, match="trigger must be one of"):
        JobFilters.parse(trigger="CRON")
