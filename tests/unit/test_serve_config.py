"""The Serve application's options come from the cluster file, and ``deploy/serve.yaml`` is the
rendered config of the same app, valid for ``serve deploy`` and free of fixed replica counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.clusterfile import load_cluster_spec
from domain.config import Settings
from domain.topology import SERVE_DEPLOYMENTS, ClusterSpec
from serve_apps.app import ServeAppArgs, deployment_options, dump_serve_config, render_serve_config

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_cluster_spec(ROOT / "deploy" / "chronoverse.yaml")


@pytest.mark.parametrize("name", SERVE_DEPLOYMENTS)
def test_deployment_options_come_from_the_cluster_file(name: str) -> None:
    options = deployment_options(SPEC, name)
    dep = SPEC.serve.deployments[name]
    assert options["name"] == name
    assert options["ray_actor_options"] == SPEC.resource_classes[dep.resource_class].ray_options()
    assert 0 < options["ray_actor_options"]["num_cpus"] < 1  # never Serve's default of one whole CPU
    assert options["max_ongoing_requests"] == dep.max_ongoing_requests
    assert options["autoscaling_config"]["max_replicas"] == dep.autoscaling_config.max_replicas
    assert "num_replicas" not in options


def test_a_missing_deployment_is_named() -> None:
    spec = ClusterSpec.model_validate({"serve": {"deployments": {}}})
    with pytest.raises(KeyError, match=r"serve\.deployments\.Gateway"):
        deployment_options(spec, "Gateway")


def test_checked_in_serve_yaml_is_the_rendered_config() -> None:
    on_disk = (ROOT / "deploy" / "serve.yaml").read_text()
    assert on_disk == dump_serve_config(Settings(), SPEC), (
        "stale deploy/serve.yaml: regenerate it (see its header)"
    )
    assert yaml.safe_load(on_disk) == render_serve_config(Settings(), SPEC)


def test_serve_yaml_is_valid_for_serve_deploy_and_has_explicit_ports() -> None:
    doc = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(doc)
    assert schema.http_options.port == Settings().server.port
    assert doc["grpc_options"]["port"] == Settings().grpc.port != 9000
    app, grpc_app = schema.applications
    assert app.import_path == "serve_apps.app:app_builder"
    assert grpc_app.name == SPEC.serve.grpc_app_name
    assert grpc_app.import_path == "serve_apps.app:grpc_app_builder"
    assert "num_replicas" not in yaml.safe_dump(doc)
    args = ServeAppArgs.model_validate(app.args)
    assert args.spec == SPEC
    assert args.settings == Settings()


def test_rendered_settings_round_trip_with_only_the_changed_values() -> None:
    from pydantic import SecretStr

    from domain.config import ServerConfig
    from serve_apps.app import settings_document

    settings = Settings(server=ServerConfig(port=18000, csrf_hmac_secret=SecretStr("s3cret")))
    doc = settings_document(settings, only_changes=True)
    assert doc == {"server": {"port": 18000, "csrf_hmac_secret": "s3cret"}}
    assert Settings.model_validate(doc) == settings
    assert Settings.model_validate(settings_document(settings)) == settings


def test_haproxy_ingress_env_makes_every_port_and_path_explicit() -> None:
    from serve_apps.app import haproxy_ingress_env

    env = haproxy_ingress_env(
        work_dir="/state/haproxy", stats_port=1, metrics_port=2, fallback_http_port=3, fallback_grpc_port=4
    )
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] == "30"  # Serve: 5 s, short on a loaded node
    ports = [env[k] for k in env if k.endswith("_PORT")]
    assert sorted(ports) == ["1", "2", "3", "4"]
    assert all(
        v.startswith("/state/haproxy") for k, v in env.items() if "FILE" in k or "PATH" in k or "BASE" in k
    )
    plain = haproxy_ingress_env(
        work_dir="/x",
        stats_port=1,
        metrics_port=2,
        fallback_http_port=3,
        fallback_grpc_port=4,
        throughput_optimized=False,
    )
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in plain
