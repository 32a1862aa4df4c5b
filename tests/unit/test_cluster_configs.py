"""The Ray cluster-launcher configs (``cluster.yaml``, ``deploy/cluster.fake.yaml``,
``deploy/cluster.onprem.yaml``) pass Ray's own preparation and schema validation (what ``ray up``
runs), and their worker node types match the resource classes of ``deploy/chronoverse.yaml``."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.clusterfile import load_cluster_spec
from cluster.fake_nodes import render_fake_cluster_config
from domain.topology import ResourceClassSpec

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "aws": ROOT / "cluster.yaml",
    "fake": ROOT / "deploy" / "cluster.fake.yaml",
    "onprem": ROOT / "deploy" / "cluster.onprem.yaml",
}
SPEC = load_cluster_spec(ROOT / "deploy" / "chronoverse.yaml")
#: Worker classes that have node types of their own (the service class runs on the head).
WORKER_CLASSES = ("low", "high")


def raw(name: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIGS[name].read_text())
    return config


def ray_validated(config: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` does to a config before using it: fill defaults, then validate the schema."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def fitting(resources: dict[str, int], cls: ResourceClassSpec) -> int:
    """Whole actors of ``cls`` that fit on a node with ``resources`` by reservation."""
    return min(math.floor(resources["CPU"] / cls.cpu_reservation),
               math.floor(resources["memory"] / cls.memory_reservation))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_passes_rays_own_validation(name: str) -> None:
    prepared = ray_validated(raw(name))
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_validation_rejects_a_broken_config() -> None:
    broken = raw("aws")
    broken["available_node_types"]["high"]["resources"]["high"] = 0.5  # resources must be integers
    with pytest.raises(jsonschema.ValidationError):
        ray_validated(broken)


@pytest.mark.parametrize("name", ["aws", "fake"])
def test_worker_node_types_carry_their_class_resource(name: str) -> None:
    types = ray_validated(raw(name))["available_node_types"]
    for cls_name in WORKER_CLASSES:
        cls = SPEC.resource_classes[cls_name]
        assert cls.resource is not None
        node = types[cls_name]["resources"]
        other = {c for c in WORKER_CLASSES if c != cls_name}
        assert node.get(cls.resource.value, 0) >= 1, f"{name}: node type {cls_name} lacks {cls.resource}"
        assert not other & set(node), f"{name}: node type {cls_name} also advertises {other & set(node)}"
        # A node type holds at least one actor at the class *limit* (what a container job may use).
        assert node["CPU"] >= cls.cpu_limit and node["memory"] >= cls.memory_limit
        # ... and advertises exactly as many class units as whole actors fit by reservation, so the
        # custom resource never promises room that CPU or memory would then refuse.
        assert node[cls.resource.value] == fitting(node, cls), f"{name}: {cls_name}"


@pytest.mark.parametrize("name", ["aws", "fake"])
def test_the_head_runs_no_pool_workers(name: str) -> None:
    config = raw(name)
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    assert not set(WORKER_CLASSES) & set(head)


@pytest.mark.parametrize("name", ["aws", "fake"])
def test_the_cluster_can_hold_every_pool_at_its_maximum(name: str) -> None:
    types = raw(name)["available_node_types"]
    for cls_name in WORKER_CLASSES:
        wanted = sum(pool.max_actors for pool in SPEC.pools.values() if pool.resource_class == cls_name)
        node = types[cls_name]
        assert node["resources"][cls_name] * node["max_workers"] >= wanted, f"{name}: {cls_name}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_no_port_is_left_to_a_colliding_default(name: str) -> None:
    config = raw(name)
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "6379" not in commands and ":9000" not in commands
    for line in config["head_start_ray_commands"]:
        if "ray start --head" in line:
            assert "--port=" in line and "--dashboard-port=" in line and "--metrics-export-port=" in line


def test_the_fake_config_points_at_the_heads_gcs_port() -> None:
    rendered = render_fake_cluster_config(26_381)
    assert rendered["provider"]["gcs_address"] == "127.0.0.1:26381"
    assert rendered["provider"]["module"] == "cluster.fake_nodes.FakeNodeProvider"
    ray_validated(rendered)


def test_the_onprem_workers_advertise_both_classes_by_reservation() -> None:
    start = " ".join(raw("onprem")["worker_start_ray_commands"])
    low, high = SPEC.resource_classes["low"], SPEC.resource_classes["high"]
    assert f"c / {low.cpu_reservation:g}" in start and f"g / {low.memory_reservation // 2**30}" in start
    assert f"c / {high.cpu_reservation:g}" in start and f"g / {high.memory_reservation // 2**30}" in start


def test_the_aws_head_deploys_chronoverse_and_reads_secrets_from_outside_the_checkout() -> None:
    config = raw("aws")
    assert any("chronoverse deploy" in line for line in config["head_start_ray_commands"])
    assert ".env" in config["rsync_exclude"]
    assert any("ssm get-parameter" in line for line in config["head_setup_commands"])


def test_the_kuberay_worker_groups_match_the_resource_classes() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text()))
    service = next(doc for doc in docs if doc["kind"] == "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    assert "resources" not in cluster["headGroupSpec"]["rayStartParams"]
    groups = {group["groupName"]: group for group in cluster["workerGroupSpecs"]}
    for cls_name in WORKER_CLASSES:
        params = groups[cls_name]["rayStartParams"]
        advertised = json.loads(json.loads(params["resources"]))  # KubeRay wants a quoted JSON string
        node = {"CPU": int(params["num-cpus"]), "memory": int(params["memory"]), **advertised}
        assert set(advertised) == {cls_name}
        assert advertised[cls_name] == fitting(node, SPEC.resource_classes[cls_name])
