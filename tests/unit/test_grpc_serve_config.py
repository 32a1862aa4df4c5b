"""The gRPC application is deployed beside the HTTP one, in ``deploy_serve`` and in
``deploy/serve.yaml``, with its servicers registered on Serve's gRPC options."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.clusterfile import load_cluster_spec
from domain.config import Settings
from serve_apps.app import ServeAppArgs, deployment_options, grpc_options
from serve_apps.grpc.deployment import GRPC_DEPLOYMENT, GRPC_ROUTE_PREFIX, GRPC_SERVICER_FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_cluster_spec(ROOT / "deploy" / "chronoverse.yaml")


def test_the_grpc_options_register_every_servicer_on_grpc_port() -> None:
    options = grpc_options(Settings())
    assert options["port"] == Settings().grpc.port
    assert options["grpc_servicer_functions"] == list(GRPC_SERVICER_FUNCTIONS)


def test_serve_yaml_deploys_the_grpc_app_with_the_http_apps_args() -> None:
    doc = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(doc)
    apps = {app.name: app for app in schema.applications}
    grpc_app = apps[SPEC.serve.grpc_app_name]
    assert grpc_app.import_path == "serve_apps.app:grpc_app_builder"
    # HAProxy builds gRPC backends only for applications with a route prefix.
    assert grpc_app.route_prefix == GRPC_ROUTE_PREFIX
    assert grpc_app.args == apps[SPEC.serve.app_name].args
    assert ServeAppArgs.model_validate(grpc_app.args).spec == SPEC


def test_the_grpc_gateway_takes_fractional_resources_from_the_cluster_file() -> None:
    options = deployment_options(SPEC, GRPC_DEPLOYMENT)
    assert 0 < options["ray_actor_options"]["num_cpus"] < 1
    assert options["autoscaling_config"]["max_replicas"] == SPEC.serve.deployments[
        GRPC_DEPLOYMENT
    ].autoscaling_config.max_replicas
