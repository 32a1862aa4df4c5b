"""The cluster file: the shipped one loads; a bad one is refused with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.clusterfile import ClusterFileError, load_cluster_spec
from domain.enums import ResourceClass
from domain.topology import SERVE_DEPLOYMENTS, ClusterSpec

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "chronoverse.yaml"
GIB = 1024**3


@pytest.fixture(scope="module")
def shipped() -> ClusterSpec:
    return load_cluster_spec(SHIPPED)


def test_shipped_file_declares_every_serve_deployment(shipped: ClusterSpec) -> None:
    assert set(shipped.serve.deployments) == set(SERVE_DEPLOYMENTS)
    assert shipped.serve.deployments["Gateway"].autoscaling_config.max_replicas == 4


def test_shipped_file_uses_the_seed_topic_partitions(shipped: ClusterSpec) -> None:
    assert {name: t.partitions for name, t in shipped.topics.items()} == {
        "workflows": 2, "jobs": 4, "job_logs": 4, "analytics": 2,
    }


def test_shipped_pools_request_their_resource_class(shipped: ClusterSpec) -> None:
    assert shipped.pool_class("execution-worker").ray_options() == {
        "num_cpus": 1.0, "memory": 2 * GIB, "resources": {ResourceClass.HIGH.value: 1},
    }
    assert shipped.pool_class("scheduler").ray_options() == {
        "num_cpus": 0.25, "memory": 1 * GIB, "resources": {ResourceClass.LOW.value: 1},
    }
    execution = shipped.pools["execution-worker"]
    assert (execution.topic, execution.consumer_group) == ("jobs", "execution-worker")
    assert execution.max_actors == 4
    assert execution.scaling.lag_high == 1000
    assert execution.scaling.queue_depth_high == 100
    assert execution.scaling.cpu_high == 0.7


def test_shipped_local_node_fits_every_pool_at_its_minimum(shipped: ClusterSpec) -> None:
    needed: dict[str, float] = {"CPU": 0.0}
    for name, pool in shipped.pools.items():
        opts = shipped.pool_class(name).ray_options()
        needed["CPU"] += opts["num_cpus"] * pool.min_actors
        for resource, amount in opts.get("resources", {}).items():
            needed[resource] = needed.get(resource, 0.0) + amount * pool.min_actors
    available = {"CPU": shipped.local.num_cpus, **shipped.local.resources}
    assert all(needed[k] <= available.get(k, 0.0) for k in needed), (needed, available)


def _write(tmp_path: Path, data: object) -> Path:
    file = tmp_path / "cluster.yaml"
    file.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return file


def _shipped_raw() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(SHIPPED.read_text())


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["pools"]["scheduler"].update(min_actors=3, max_actors=2),
         "pools.scheduler: min_actors must not exceed max_actors"),
        (lambda d: d["pools"]["scheduler"].update(resource_class="huge"), "pools.scheduler.resource_class"),
        (lambda d: d["pools"]["workflow-worker"].update(topic="nope"), "pools.workflow-worker.topic"),
        (lambda d: d["pools"]["execution-worker"].update(consumers=9), "pools.execution-worker.consumers"),
        (lambda d: d["pools"]["scheduler"].update(max_in_flight=0), "pools.scheduler.max_in_flight"),
        (lambda d: d["pools"]["joblogs-processor"].pop("consumer_group"),
         "pools.joblogs-processor: topic and consumer_group go together"),
        (lambda d: d["resource_classes"]["low"].update(memory_limit="lots"),
         "resource_classes.low.memory_limit"),
        (lambda d: d["resource_classes"]["high"].update(cpu_reservation=3),
         "resource_classes.high: cpu_reservation must not exceed cpu_limit"),
        (lambda d: d["topics"]["jobs"].update(partitions=0), "topics.jobs.partitions"),
        (lambda d: d["serve"]["deployments"]["Gateway"]["autoscaling_config"].update(min_replicas=9),
         "serve.deployments.Gateway.autoscaling_config"),
        (lambda d: d["serve"].update(proxy_location="Everywhere"), "serve.proxy_location"),
        (lambda d: d.update(bogus=1), "bogus"),
        (lambda d: d["local"].update(num_cpus=0), "local.num_cpus"),
    ],
)
def test_bad_cluster_file_names_the_key(tmp_path: Path, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    data = _shipped_raw()
    mutate(data)
    file = _write(tmp_path, data)
    with pytest.raises(ClusterFileError) as caught:
        load_cluster_spec(file)
    message = str(caught.value)
    assert message.startswith(f"{file}: ")
    assert expected in message
    assert "\n" not in message


def test_unparseable_yaml_is_reported_as_such(tmp_path: Path) -> None:
    file = _write(tmp_path, "pools: [unclosed\n")
    with pytest.raises(ClusterFileError, match="not valid YAML"):
        load_cluster_spec(file)


def test_missing_file_is_reported_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match=f"cluster file not found: {tmp_path / 'absent.yaml'}"):
        load_cluster_spec(tmp_path / "absent.yaml")


def test_empty_file_means_the_defaults(tmp_path: Path) -> None:
    assert load_cluster_spec(_write(tmp_path, "")) == ClusterSpec()
