"""The local embedded stack behind ``chronoverse up`` and the test fixtures.

PostgreSQL, Redis, the tansu Kafka broker, the chdb data directory, Docker (optional) and a Ray head,
each started as a process with its pid, port and log recorded in ``<state_dir>/stack.json``.
"""

from cluster.localstack.base import ComponentRecord, ComponentStatus, StackError
from cluster.localstack.docker_engine import BUSYBOX_IMAGE, ensure_busybox_image
from cluster.localstack.postgres import create_database
from cluster.localstack.processes import free_port
from cluster.localstack.stack import ALL, INFRA, LocalStack, load_state, parse_external, stop_stack
from cluster.localstack.state import StackState

__all__ = [
    "ALL",
    "BUSYBOX_IMAGE",
    "INFRA",
    "ComponentRecord",
    "ComponentStatus",
    "LocalStack",
    "StackError",
    "StackState",
    "create_database",
    "ensure_busybox_image",
    "free_port",
    "load_state",
    "parse_external",
    "stop_stack",
]
