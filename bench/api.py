"""API benchmark (SPEC §8): authenticated ``GET /workflows/{id}`` and ``GET /workflows`` through the
Serve gateway (default proxy and the HAProxy ingress) and the same handler code on plain uvicorn.

Self-contained: starts embedded PostgreSQL and Redis (``cluster.localstack``) on free ports in a
temporary directory, then for each mode starts the server in a child process, registers a user,
creates workflows, and measures

* throughput and latency at a fixed concurrency with ``wrk`` (falls back to an asyncio httpx loop
  when ``wrk`` is missing);
* latency at a fixed offered rate (open loop, httpx), the SPEC's "p99 ≤ 50 ms at 200 req/s".

Prints one JSON line per measure: ``{"name", "value", "unit", "params"}``; ratios to uvicorn last.

    .venv/bin/python bench/api.py [--duration 10] [--warmup 3] [--concurrency 32] [--rate 200]
                                  [--modes uvicorn,serve,haproxy]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from domain.config import Settings  # noqa: E402

#: ``serve``: Serve's default proxy; ``haproxy``: RAY_SERVE_ENABLE_HA_PROXY=1; ``-fast``: plus
#: RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (user code on the replica's main loop, gRPC between handles).
#: ``haproxy-fast`` is what ``chronoverse up`` runs by default (ADR 0004).
MODES = ("uvicorn", "serve", "serve-fast", "haproxy", "haproxy-fast")
MAX_IN_FLIGHT = 128
OPEN_LOOP_TIMEOUT_S = 10.0
PASSWORD = "bench password 1"


def emit(name: str, value: float, unit: str, **params: Any) -> None:
    # The 1-minute load average says how quiet the machine was (Ray workers run at nice 15).
    params["loadavg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "params": params}), flush=True)


def free_port() -> int:
    from cluster.localstack import free_port as _free

    return _free()


# ------------------------------------------------------------------------------------------------
# load generation
# ------------------------------------------------------------------------------------------------

_WRK_LATENCY = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, cookie: str, *, concurrency: int, duration: float) -> dict[str, float]:
    """Closed-loop load with wrk: requests/s, p50/p99 latency (ms), non-2xx count."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{int(duration)}s",
            "--latency",
            "-H",
            f"Cookie: session={cookie}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: float(v) * _UNIT_MS[u] for p, v, u in _WRK_LATENCY.findall(out)}
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50": lat["50"],
        "p99": lat["99"],
        "errors": float(errors.group(1)) if errors else 0.0,
    }


async def httpx_closed_loop(url: str, cookie: str, *, concurrency: int, duration: float) -> dict[str, float]:
    """The same measure with httpx when wrk is not installed (the client then costs CPU too)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(cookies={"session": cookie}, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.get(url)
                latencies.append((time.perf_counter() - start) * 1000)
                errors += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "errors": float(errors),
    }


async def open_loop(url: str, cookie: str, *, rate: float, duration: float) -> dict[str, float]:
    """Offer ``rate`` requests/s on a fixed schedule (open loop).  Latency counts from each request's
    *scheduled* start, so queueing in an overloaded server is not hidden (no coordinated omission).
    At most ``MAX_IN_FLIGHT`` requests are outstanding; a request that cannot start, or takes
    longer than ``OPEN_LOOP_TIMEOUT_S``, is an error."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    in_flight = 0
    async with httpx.AsyncClient(
        cookies={"session": cookie}, limits=limits, timeout=OPEN_LOOP_TIMEOUT_S
    ) as client:

        async def one(scheduled: float) -> None:
            nonlocal errors, in_flight
            in_flight += 1
            try:
                response = await client.get(url)
                if response.status_code == 200:
                    latencies.append((time.perf_counter() - scheduled) * 1000)
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            finally:
                in_flight -= 1

        tasks = []
        begin = time.perf_counter()
        total = int(rate * duration)
        for i in range(total):
            scheduled = begin + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= MAX_IN_FLIGHT:
                errors += 1  # the server is this far behind: the offered rate is not sustainable
                continue
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
    latencies.sort()
    if not latencies:
        return {"p50": float("nan"), "p99": float("nan"), "errors": float(errors), "achieved_rps": 0.0}
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "errors": float(errors),
        "achieved_rps": len(latencies) / elapsed,
    }


# ------------------------------------------------------------------------------------------------
# one mode, in a child process
# ------------------------------------------------------------------------------------------------


def wait_http(base_url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{base_url} did not become healthy")


def seed(base_url: str, workflows: int) -> tuple[str, str]:
    """Register a user and create workflows; return (session cookie, one workflow id)."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        response = client.post(
            "/auth/register",
            json={"email": f"bench-{secrets.token_hex(4)}@example.com", "password": PASSWORD},
        )
        response.raise_for_status()
        csrf = response.json()["csrf_token"]
        workflow_id = ""
        for i in range(workflows):
            made = client.post(
                "/workflows",
                headers={"X-CSRF-Token": csrf, "Idempotency-Key": f"bench-{i}"},
                json={
                    "name": f"bench-{i}",
                    "payload": json.dumps({"endpoint": "http://127.0.0.1:9/health"}),
                    "kind": "HEARTBEAT",
                    "interval": 5,
                    "max_consecutive_job_failures_allowed": 3,
                },
            )
            made.raise_for_status()
            workflow_id = made.json()["id"]
        return client.cookies["session"], workflow_id


def measure(mode: str, base_url: str, args: argparse.Namespace) -> None:
    cookie, workflow_id = seed(base_url, args.workflows)
    targets = {
        "get_workflow": f"{base_url}/workflows/{workflow_id}",
        "list_workflows": f"{base_url}/workflows",
        "healthz": f"{base_url}/healthz",
    }
    use_wrk = shutil.which("wrk") is not None
    for name, url in targets.items():
        # Warm-up: caches, connection pools, lazy imports (and, with --warmup long enough, the
        # Gateway autoscaler's reaction to the load, so a replica starting does not skew the measure).
        if use_wrk:
            wrk(url, cookie, concurrency=args.concurrency, duration=args.warmup)
            result = wrk(url, cookie, concurrency=args.concurrency, duration=args.duration)
        else:
            result = asyncio.run(
                httpx_closed_loop(url, cookie, concurrency=args.concurrency, duration=args.duration)
            )
        params = {
            "mode": mode,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "client": "wrk" if use_wrk else "httpx",
            "errors": int(result["errors"]),
        }
        emit(f"api.{name}.rps", result["rps"], "req/s", **params)
        emit(f"api.{name}.p50", result["p50"], "ms", **params)
        emit(f"api.{name}.p99", result["p99"], "ms", **params)
    at_rate = asyncio.run(open_loop(targets["get_workflow"], cookie, rate=args.rate, duration=args.duration))
    params = {
        "mode": mode,
        "rate": args.rate,
        "duration_s": args.duration,
        "errors": int(at_rate["errors"]),
        "achieved_rps": round(at_rate["achieved_rps"], 1),
    }
    emit("api.get_workflow.p50_at_rate", at_rate["p50"], "ms", **params)
    emit("api.get_workflow.p99_at_rate", at_rate["p99"], "ms", **params)


def run_uvicorn_server(settings_file: str, port: int) -> None:
    """Entry of the uvicorn server process: the gateway with the services in-process."""
    import uvicorn

    from serve_apps.gateway.app import create_local_app

    settings = Settings.model_validate_json(Path(settings_file).read_text())
    uvicorn.run(
        create_local_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=int(settings.server.idle_timeout.total_seconds()),
    )


def run_mode(mode: str, settings_file: str, args: argparse.Namespace) -> None:
    settings = Settings.model_validate_json(Path(settings_file).read_text())
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    if mode == "uvicorn":
        uvicorn_server = subprocess.Popen(
            [sys.executable, __file__, "--uvicorn-server", settings_file, "--port", str(port)],
            stderr=subprocess.DEVNULL,  # the access log, as Ray's log files swallow it in Serve
        )
        try:
            wait_http(base_url)
            measure(mode, base_url, args)
        finally:
            uvicorn_server.terminate()
            uvicorn_server.wait(timeout=30)
        return

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    temp_dir = tempfile.mkdtemp(prefix="cvb-", dir="/tmp")
    if mode.startswith("haproxy"):
        from serve_apps.app import haproxy_ingress_env

        os.environ.update(
            haproxy_ingress_env(
                work_dir=f"{temp_dir}/hap",  # removed with the Ray temp dir
                stats_port=free_port(),
                metrics_port=free_port(),
                fallback_http_port=free_port(),
                fallback_grpc_port=free_port(),
                throughput_optimized=mode.endswith("-fast"),
            )
        )
    elif mode.endswith("-fast"):
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    import ray
    from ray import serve

    from cluster.clusterfile import load_cluster_spec
    from serve_apps.app import deploy_serve

    spec = load_cluster_spec(ROOT / "deploy" / "chronoverse.yaml")
    if args.gateway_min_replicas is not None:
        gateway = spec.serve.deployments["Gateway"]
        scaling = gateway.autoscaling_config.model_copy(update={"min_replicas": args.gateway_min_replicas})
        gateway = gateway.model_copy(update={"autoscaling_config": scaling})
        deployments = {**spec.serve.deployments, "Gateway": gateway}
        spec = spec.model_copy(update={"serve": spec.serve.model_copy(update={"deployments": deployments})})
    server = settings.server.model_copy(update={"host": "127.0.0.1", "port": port})
    grpc = settings.grpc.model_copy(update={"port": free_port()})
    settings = settings.model_copy(update={"server": server, "grpc": grpc})
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        _temp_dir=temp_dir,
    )
    try:
        deploy_serve(settings, spec, blocking_wait=True)
        wait_http(base_url)
        measure(mode, base_url, args)
        gateway = serve.status().applications[spec.serve.app_name].deployments["Gateway"]
        emit(
            "api.gateway.replicas_after_load",
            float(sum(gateway.replica_states.values())),
            "replicas",
            mode=mode,
            min_replicas=spec.serve.deployments["Gateway"].autoscaling_config.min_replicas,
        )
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# orchestration
# ------------------------------------------------------------------------------------------------


def start_stack(state_dir: Path) -> tuple[Any, Settings]:
    from cluster.clusterfile import load_cluster_spec
    from cluster.localstack import LocalStack
    from domain.config import PostgresConfig, RedisConfig, StackConfig
    from domain.enums import StackComponent
    from store.migrate import migrate

    settings = Settings().model_copy(
        update={
            "postgres": PostgresConfig(host="127.0.0.1", port=free_port()),
            "redis": RedisConfig(host="127.0.0.1", port=free_port(), eviction_policy="noeviction"),
            "stack": StackConfig(state_dir=str(state_dir)),
        }
    )
    spec = load_cluster_spec(ROOT / "deploy" / "chronoverse.yaml")
    stack = LocalStack(settings, spec, state_dir=state_dir, test_mode=True, progress=lambda line: None)
    stack.up((StackComponent.POSTGRES, StackComponent.REDIS))
    asyncio.run(migrate(settings.postgres))
    return stack, settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measure")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measure")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0, help="offered req/s of the latency measure")
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--gateway-min-replicas", type=int, help="override the cluster file's Gateway min_replicas"
    )
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--uvicorn-server", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.uvicorn_server:
        run_uvicorn_server(args.uvicorn_server, args.port)
        return
    if args.mode:
        run_mode(args.mode, args.settings, args)
        return

    from serve_apps.app import settings_document

    state_dir = Path(tempfile.mkdtemp(prefix="cv-bench-"))
    state_dir.chmod(0o755)  # embedded PostgreSQL runs unprivileged
    stack, settings = start_stack(state_dir)
    settings_file = state_dir / "settings.json"
    settings_file.write_text(json.dumps(settings_document(settings)))
    results: dict[str, dict[str, float]] = {}
    try:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--mode",
                    mode,
                    "--settings",
                    str(settings_file),
                    "--duration",
                    str(args.duration),
                    "--warmup",
                    str(args.warmup),
                    "--concurrency",
                    str(args.concurrency),
                    "--rate",
                    str(args.rate),
                    "--workflows",
                    str(args.workflows),
                    *(
                        ["--gateway-min-replicas", str(args.gateway_min_replicas)]
                        if args.gateway_min_replicas is not None
                        else []
                    ),
                ],
                capture_output=True,
                text=True,
            )
            for line in child.stdout.splitlines():
                if line.startswith("{"):
                    print(line, flush=True)
                    record = json.loads(line)
                    results.setdefault(mode, {})[record["name"]] = record["value"]
            if child.returncode != 0:
                print(
                    json.dumps(
                        {
                            "name": "api.mode_failed",
                            "value": child.returncode,
                            "unit": "exit",
                            "params": {"mode": mode, "stderr": child.stderr[-2000:]},
                        }
                    ),
                    flush=True,
                )
        baseline = results.get("uvicorn", {})
        for mode, values in results.items():
            if mode == "uvicorn":
                continue
            for name in ("api.get_workflow.rps", "api.list_workflows.rps", "api.healthz.rps"):
                if baseline.get(name) and values.get(name):
                    emit(
                        name.replace(".rps", ".ratio_to_uvicorn"),
                        values[name] / baseline[name],
                        "ratio",
                        mode=mode,
                    )
    finally:
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
