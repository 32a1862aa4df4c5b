"""Which worker class and consumer shape each pool gets (cluster/backbone.py), without Ray running."""

from __future__ import annotations

from datetime import timedelta

from cluster.backbone import EXECUTION_STUB, consumer_spec_for, worker_class_for
from domain.config import JoblogsProcessorConfig, Settings


def test_the_execution_stub_replaces_only_the_execution_worker() -> None:
    assert worker_class_for("execution-worker", execution_stub=True) == EXECUTION_STUB
    assert worker_class_for("execution-worker", execution_stub=False) != EXECUTION_STUB
    assert worker_class_for("workflow-worker", execution_stub=True) == "actors.workflow_worker:WorkflowWorker"


def test_pools_without_a_worker_class_are_not_started() -> None:
    assert worker_class_for("scheduler", execution_stub=False) is None


def test_joblogs_consumers_deliver_batches_and_the_others_single_records() -> None:
    settings = Settings(joblogs=JoblogsProcessorConfig(batch_job_logs_size_limit=500,
                                                       batch_job_logs_time_interval=timedelta(seconds=1)))
    joblogs = consumer_spec_for(settings, "joblogs-processor", "job_logs", "joblogs-processor")
    assert (joblogs.batch_size, joblogs.batch_wait_s) == (500, 1.0)
    workflows = consumer_spec_for(settings, "workflow-worker", "workflows", "workflow-worker")
    assert (workflows.batch_size, workflows.method) == (1, "handle")
