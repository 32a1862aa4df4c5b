"""Which Serve ingress a local head starts (ADR 0004): HAProxy on a single node with every port
explicit, Serve's default proxy on the fake multi-node provider, and nothing inherited from the
parent's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.localstack.ray_head import (
    _ports,
    _without_serve_ingress,
    serve_ingress_env,
    temp_dir_for,
    uses_haproxy,
)
from domain.config import GrpcConfig, RayConfig, ServerConfig, Settings
from serve_apps.app import haproxy_ingress_env

EPHEMERAL_LOW = 32768


def _settings(**ray: object) -> Settings:
    return Settings(ray=RayConfig(**ray))  # type: ignore[arg-type]


def test_a_single_node_head_uses_haproxy_by_default_and_elastic_never_does() -> None:
    assert uses_haproxy(Settings(), elastic=False)
    assert not uses_haproxy(Settings(), elastic=True)
    assert not uses_haproxy(_settings(serve_ingress="proxy"), elastic=False)


def test_the_haproxy_environment_uses_the_configured_ports_and_the_heads_temp_dir() -> None:
    settings = _settings(haproxy_stats_port=30001, haproxy_metrics_port=30002,
                         haproxy_fallback_http_port=30003, haproxy_fallback_grpc_port=30004)
    env = serve_ingress_env(settings, Path("/tmp/cv-ray-x"), elastic=False)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert (env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]) == ("30001", "30002")
    assert env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == "30003"
    assert env["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"] == "30004"
    assert env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == "/tmp/cv-ray-x/hap/haproxy.cfg"
    assert env["RAY_SERVE_HAPROXY_SOCKET_PATH"].startswith("/tmp/cv-ray-x/hap/")
    slow = serve_ingress_env(_settings(serve_throughput_optimized=False), Path("/t"), elastic=False)
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in slow


def test_the_haproxy_socket_fits_haproxys_limit_below_a_heads_temp_dir() -> None:
    temp_dir = temp_dir_for(Path("/a/very/long/state/directory/" + "x" * 200))
    socket = serve_ingress_env(Settings(), temp_dir, elastic=False)["RAY_SERVE_HAPROXY_SOCKET_PATH"]
    node_id = "f" * 56  # Serve inserts the node id as a directory before the file name
    head, _, name = socket.rpartition("/")
    assert len(f"{head}/{node_id}/{name}") <= 97


def test_a_work_dir_too_long_for_haproxys_socket_is_refused() -> None:
    with pytest.raises(ValueError, match="97-byte"):
        haproxy_ingress_env(work_dir="/tmp/" + "d" * 40, stats_port=1, metrics_port=2,
                            fallback_http_port=3, fallback_grpc_port=4)


def test_no_haproxy_environment_for_the_default_proxy_or_an_elastic_head() -> None:
    assert serve_ingress_env(_settings(serve_ingress="proxy"), Path("/t"), elastic=False) == {}
    assert serve_ingress_env(Settings(), Path("/t"), elastic=True) == {}


def test_the_haproxy_ports_are_checked_and_recorded_only_when_haproxy_runs() -> None:
    haproxy_vars = {f"CHRONOVERSE_RAY_HAPROXY_{name}_PORT"
                    for name in ("STATS", "METRICS", "FALLBACK_HTTP", "FALLBACK_GRPC")}
    assert haproxy_vars <= set(_ports(Settings()))
    assert not haproxy_vars & set(_ports(Settings(), elastic=True))
    assert not haproxy_vars & set(_ports(_settings(serve_ingress="proxy")))


def test_every_recorded_port_variable_names_its_setting() -> None:
    for var in _ports(Settings()):
        if var.startswith(RayConfig.env_prefix):
            assert var.removeprefix(RayConfig.env_prefix).lower() in RayConfig.model_fields, var


def test_default_ports_are_distinct_and_the_haproxy_ones_below_the_ephemeral_range() -> None:
    ports = _ports(Settings())
    assert len(set(ports.values())) == len(ports), ports
    ray = RayConfig()
    haproxy = [ray.haproxy_stats_port, ray.haproxy_metrics_port, ray.haproxy_fallback_http_port,
               ray.haproxy_fallback_grpc_port]
    assert all(port < EPHEMERAL_LOW for port in haproxy)
    assert not set(haproxy) & set(range(ray.min_worker_port, ray.max_worker_port + 1))
    assert not set(haproxy) & {ServerConfig().port, GrpcConfig().port}


def test_a_parents_serve_ingress_variables_are_not_inherited() -> None:
    parent = {"PATH": "/bin", "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_STATS_PORT": "1",
              "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": "2", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
              "RAY_SERVE_OTHER": "kept"}
    assert _without_serve_ingress(parent) == {"PATH": "/bin", "RAY_SERVE_OTHER": "kept"}
