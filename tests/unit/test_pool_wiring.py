"""Which worker class and consumer shape each pool gets (cluster/backbone.py), without Ray running."""

from __future__ import annotations

from datetime import timedelta

from cluster.backbone import (
    BACKGROUND_FETCH_MAX_WAIT_S,
    EXECUTION_BATCH,
    EXECUTION_LANE_UNITS,
    EXECUTION_STUB,
    LANE_UNITS,
    ROUTED_BATCH,
    consumer_spec_for,
    worker_class_for,
)
from domain.config import JoblogsProcessorConfig, Settings
from domain.topology import PoolSpec


def test_the_execution_stub_replaces_only_the_execution_worker() -> None:
    assert worker_class_for("execution-worker", execution_stub=True) == EXECUTION_STUB
    assert worker_class_for("execution-worker", execution_stub=False) != EXECUTION_STUB
    assert worker_class_for("workflow-worker", execution_stub=True) == "actors.workflow_worker:WorkflowWorker"


def test_pools_without_a_worker_class_are_not_started() -> None:
    assert worker_class_for("scheduler", execution_stub=False) is None


def test_joblogs_consumers_wait_to_fill_batches_and_the_others_route_what_is_queued() -> None:
    settings = Settings(joblogs=JoblogsProcessorConfig(batch_job_logs_size_limit=500,
                                                       batch_job_logs_time_interval=timedelta(seconds=1)))
    joblogs = consumer_spec_for(settings, "joblogs-processor", "job_logs", "joblogs-processor")
    assert (joblogs.batch_size, joblogs.batch_wait_s) == (500, 1.0)
    for pool, topic in (("workflow-worker", "workflows"), ("analytics-processor", "analytics")):
        spec = consumer_spec_for(settings, pool, topic, pool)
        assert (spec.batch_size, spec.batch_wait_s, spec.method) == (ROUTED_BATCH, 0.0, "handle")
        assert spec.max_in_flight_per_lane == LANE_UNITS > 1
    jobs = consumer_spec_for(settings, "execution-worker", "jobs", "execution-worker")
    assert (jobs.batch_size, jobs.batch_wait_s) == (EXECUTION_BATCH, 0.0)
    # Only dispatch is latency-critical: the other groups poll the broker less often when idle.
    assert jobs.fetch_max_wait_s is None
    assert joblogs.fetch_max_wait_s == spec.fetch_max_wait_s == BACKGROUND_FETCH_MAX_WAIT_S
    assert jobs.max_in_flight_per_lane == EXECUTION_LANE_UNITS > 1


def test_consumers_of_a_pool_route_to_its_workers_within_the_per_worker_bound() -> None:
    execution = PoolSpec(resource_class="high", max_in_flight=32, topic="jobs",
                         consumer_group="execution-worker", consumers=3)
    routed = consumer_spec_for(Settings(), "execution-worker", "jobs", "g", pool_spec=execution)
    assert routed.worker_in_flight == 11  # three consumers together: at most 33 ≈ 32 calls per worker
    assert consumer_spec_for(Settings(), "execution-worker", "jobs", "g").worker_in_flight == 0
