"""The ``chronoverse`` command.

One function per command (``cmd_<name>``), registered in :func:`build_parser`; later commands
(``deploy``, ``outbox redrive``, ``autoscaler …``) add a function and a ``sub.add_parser`` line.
Configuration errors print one line and exit 2; a part that cannot start prints which part, why and
where its log is, and exits 1 — never a bare traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from cluster.clusterfile import ClusterFileError, load_cluster_spec
from cluster.localstack import (
    INFRA,
    ComponentRecord,
    LocalStack,
    StackError,
    load_state,
    parse_external,
    stop_stack,
)
from cluster.localstack.ray_head import RayHead, is_elastic
from cluster.settings import ConfigError, load_settings, render_settings
from domain.config import Settings, StackConfig
from domain.enums import StackComponent
from domain.topology import ClusterSpec

T = TypeVar("T")
_STARTED = time.monotonic()


def _say(message: str) -> None:
    """A progress line, prefixed with the seconds since the command started."""
    print(f"[{time.monotonic() - _STARTED:5.1f}s] {message}", flush=True)


# -- shared loading ----------------------------------------------------------------------------


def _apply_env(env: dict[str, str]) -> None:
    # setdefault: a variable the user set explicitly always wins over the recorded stack.
    for key, value in env.items():
        os.environ.setdefault(key, value)


def load_context() -> tuple[Settings, Path]:
    """Settings pointing at the running local stack (if one is recorded) and its state dir."""
    settings = load_settings()
    state_dir = Path(settings.stack.state_dir)
    state = load_state(state_dir)
    if state is not None:
        _apply_env(state.env())
        settings = load_settings()
    return settings, state_dir


def load_spec(settings: Settings) -> ClusterSpec:
    """The cluster file; the built-in defaults when the *default* path is absent (running from
    outside the repository).  An explicitly configured file must exist."""
    path = Path(settings.stack.cluster_file)
    default = StackConfig.model_fields["cluster_file"].default
    if settings.stack.cluster_file == default and not path.exists():
        print(f"note: {path} not found here; using the built-in cluster defaults", file=sys.stderr)
        return ClusterSpec()
    return load_cluster_spec(path)


def _external() -> frozenset[StackComponent]:
    return parse_external(os.environ.get("CHRONOVERSE_EXTERNAL", ""))


def _step(name: str, action: Callable[[], T], hint: str = "") -> T:
    """Run one step of ``up``/``migrate``; any failure becomes a one-line :class:`StackError`."""
    try:
        return action()
    except StackError:
        raise
    except Exception as err:
        reason = f"{err.__class__.__name__}: {err}".strip().replace("\n", " ")
        raise StackError(name, reason + (f" ({hint})" if hint else "")) from err


def _migrate(settings: Settings, spec: ClusterSpec, state_dir: Path) -> None:
    from ingest.topics import ensure_topics
    from store.migrate import migrate

    logs = state_dir / "logs"
    applied = _step("migrations", lambda: asyncio.run(migrate(settings.postgres)),
                    f"PostgreSQL log: {logs / 'postgres.log'}")
    _say(f"migrations: applied {', '.join(applied)}" if applied else "migrations: schema up to date")
    _step("topics", lambda: asyncio.run(ensure_topics(settings.kafka, spec.topics)),
          f"broker log: {logs / 'kafka.log'}")
    _say(f"topics: {', '.join(f'{n} ({t.partitions})' for n, t in spec.topics.items())} ready")


def _recorded_head(state_dir: Path) -> ComponentRecord | None:
    """The Ray head this stack started, if one is recorded."""
    state = load_state(state_dir)
    record = state.components.get(StackComponent.RAY) if state is not None else None
    return record if record is not None and record.managed else None


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{shown}:{port}"


# -- commands ----------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    """Start the local stack (idempotent), migrate, start the Ray head and deploy; leave it running.

    ``--elastic`` starts the head on the fake multi-node provider (``low``/``high`` worker nodes come
    and go with the pools).  A recorded elastic head stays elastic on a later ``up`` without the flag."""
    from cluster import bootstrap

    settings, state_dir = load_context()
    spec = load_spec(settings)
    external = _external()
    recorded = _recorded_head(state_dir)
    if (args.elastic and recorded is not None and not is_elastic(recorded)
            and RayHead.check(recorded, settings).ok):
        raise StackError(StackComponent.RAY, "a single-node head already runs in this stack; "
                         "`chronoverse down` first, then `chronoverse up --elastic`", recorded.log)
    elastic = args.elastic or (recorded is not None and is_elastic(recorded))
    mode = " (elastic: fake multi-node Ray cluster)" if elastic else ""
    _say(f"local stack in {state_dir.resolve()}{mode}")
    LocalStack(settings, spec, state_dir=state_dir, external=external, progress=_say).up(INFRA)
    state = load_state(state_dir)
    assert state is not None
    _apply_env(state.env())
    settings = load_settings()
    _migrate(settings, spec, state_dir)
    stack = LocalStack(settings, spec, state_dir=state_dir, external=external, progress=_say, elastic=elastic)
    ray_record = stack.up([StackComponent.RAY]).components[StackComponent.RAY]
    _apply_env(ray_record.env)
    settings = load_settings()
    address = ray_record.endpoint
    elastic = ray_record.managed and is_elastic(ray_record)
    if args.elastic and not elastic:
        _say(f"note: --elastic ignored: Ray at {address} was not started by this stack")
    deploy_spec = bootstrap.head_only_proxy(spec) if elastic else spec
    _say(f"deploy: connecting to Ray at {address}")
    _step("deploy", lambda: bootstrap.deploy(settings, deploy_spec, address, _say, keep_running_serve=True),
          f"Ray logs: {state_dir / 'logs' / 'ray'}")
    print()
    print(f"Chronoverse is up ({time.monotonic() - _STARTED:.1f}s).")
    print(f"  API:        {_url(settings.server.host, settings.server.port)}")
    print(f"  Dashboard:  {_url(settings.ray.dashboard_host, settings.ray.dashboard_port)}")
    if elastic:
        config = ray_record.data["autoscaling_config"]
        print(f"  Ray:        elastic: fake multi-node, low/high worker nodes on demand (config {config})")
    print(f"  Logs:       {(state_dir / 'logs').resolve()}")
    print("  Status:     chronoverse status      Stop: chronoverse down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop everything ``up`` started, by pid; exit 1 if anything survived."""
    try:
        state_dir = Path(load_settings().stack.state_dir)
    except ConfigError:
        # Stopping must work even when the configuration has since been broken.
        state_dir = Path(os.environ.get("CHRONOVERSE_STATE_DIR", StackConfig().state_dir))
    problems = stop_stack(state_dir, _say)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print one row per component; exit 1 if any expected component is down."""
    settings, state_dir = load_context()
    stack = LocalStack(settings, ClusterSpec(), state_dir=state_dir, external=_external(), progress=_say)
    rows = stack.status()
    table = [("COMPONENT", "STATE", "PID", "ENDPOINT", "DETAIL")]
    table += [(r.name.value, r.state.value, str(r.pid or "-"), r.endpoint or "-", r.detail) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    down = [r.name.value for r in rows if not r.ok]
    if settings.ray.address:
        serve_spec = load_spec(settings).serve
        for app_name in (serve_spec.app_name, serve_spec.grpc_app_name):
            down += _print_serve(settings, app_name)
        down += _print_backbone(settings)
    print()
    print(f"API {_url(settings.server.host, settings.server.port)}  "
          f"dashboard {_url(settings.ray.dashboard_host, settings.ray.dashboard_port)}  "
          f"logs {(state_dir / 'logs').resolve()}")
    if down:
        print(f"down: {', '.join(down)}", file=sys.stderr)
    return 1 if down else 0


def _print_table(table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _print_serve(settings: Settings, app_name: str) -> list[str]:
    """The Serve application and its deployments (replicas running/total); returns what is down."""
    from cluster import bootstrap

    try:
        bootstrap.connect(settings, settings.ray.address)
        report = bootstrap.serve_report(app_name)
    except Exception as err:  # status must report, never crash
        print(f"\nserve: not reachable ({err.__class__.__name__}: {err})")
        return ["serve"]
    print()
    if report.status is None:
        print(f"serve: application {app_name!r} is not deployed ({report.proxies} proxies)")
        return ["serve"]
    table = [("DEPLOYMENT", "STATUS", "REPLICAS", "MESSAGE")]
    table += [(d.name, d.status, f"{d.running}/{d.replicas}", d.message[:60]) for d in report.deployments]
    print(f"serve: application {app_name!r} {report.status} ({report.proxies} proxies)")
    _print_table(table)
    # DEPLOYING (replicas starting, autoscaling) is on its way; only a failed application is down.
    return [f"serve:{app_name}"] if report.status in ("DEPLOY_FAILED", "UNHEALTHY") else []


def _print_backbone(settings: Settings) -> list[str]:
    """Pools (size/busy/queue) and consumer groups (lag) of the deployed backbone; returns what is down."""
    from cluster import bootstrap
    from cluster.backbone import ConsumerStatus, backbone_status

    try:
        bootstrap.connect(settings, settings.ray.address)
        rows = backbone_status(settings.ray.namespace)
    except Exception as err:  # status must report, never crash
        print(f"\nbackbone: not reachable ({err.__class__.__name__}: {err})")
        return ["backbone"]
    pools = [("POOL", "SIZE", "TARGET", "BUSY", "QUEUE", "IN-FLIGHT", "HANDLED", "FAILED")]
    groups = [("CONSUMER", "GROUP", "RUNNING", "PARTITIONS", "LAG", "PROCESSED", "RETRIES")]
    down: list[str] = []
    for row in rows:
        if isinstance(row, ConsumerStatus):
            groups.append((row.name, row.group, "yes" if row.running else "NO",
                           ",".join(map(str, row.partitions)) or "-", str(row.total_lag), str(row.processed),
                           str(row.retries)))
            if not row.running:
                down.append(row.name)
        else:
            pools.append((row.pool, str(row.size), str(row.target), str(row.busy), str(row.queue_depth),
                          str(row.in_flight), str(row.handled), str(row.failed)))
            if row.size == 0 and row.target > 0:
                down.append(row.pool)
    print()
    _print_table(pools)
    print()
    _print_table(groups)
    return down


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy the Serve app, the backbone and the autoscaler onto an existing Ray cluster."""
    from cluster import bootstrap

    settings, state_dir = load_context()
    spec = load_spec(settings)
    address = args.address or settings.ray.address
    if not address:
        print("error: no Ray address: pass --address host:port or set CHRONOVERSE_RAY_ADDRESS",
              file=sys.stderr)
        return 2
    if args.migrate:
        _migrate(settings, spec, state_dir)
    head = _recorded_head(state_dir)
    if head is not None and is_elastic(head) and head.endpoint == address:
        spec = bootstrap.head_only_proxy(spec)
    _step("deploy", lambda: bootstrap.deploy(settings, spec, address, _say, skip_serve=args.skip_serve))
    _say(f"deployed onto {address}; API {_url(settings.server.host, settings.server.port)}")
    return 0


def cmd_outbox_redrive(args: argparse.Namespace) -> int:
    """Re-queue DEAD outbox rows (optionally of one topic and/or Kafka key)."""
    from cluster.backbone import redrive

    settings, _ = load_context()
    count = asyncio.run(redrive(settings, args.topic, args.key))
    scope = " ".join(f"{k}={v}" for k, v in (("topic", args.topic), ("key", args.key)) if v) or "all topics"
    print(f"re-queued {count} DEAD outbox row(s) ({scope})")
    return 0


def cmd_autoscaler_simulate(args: argparse.Namespace) -> int:
    """Replay a load trace through a pool's policy; write a PNG timeline and print a JSON summary."""
    from cluster.simulate import TraceError, plot, read_trace, run

    spec = load_cluster_spec(args.policy)
    try:
        result = run(spec, args.pool, read_trace(args.trace), startup_s=args.startup_s, tail_s=args.tail_s)
    except TraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plot(result, spec.pools[args.pool].scaling.lag_high, args.out)
    print(result.summary.model_dump_json())
    print(f"timeline written to {args.out}", file=sys.stderr)
    return 0


def cmd_autoscaler_explain(args: argparse.Namespace) -> int:
    """Print the pool autoscaler's current decision and its inputs for every pool."""
    from cluster import bootstrap
    from cluster.autoscaler import explain
    from domain.errors import Unavailable

    settings, _ = load_context()
    if not settings.ray.address:
        print("error: no running cluster recorded; set CHRONOVERSE_RAY_ADDRESS", file=sys.stderr)
        return 2
    bootstrap.connect(settings, settings.ray.address)
    try:
        rows = explain(settings.ray.namespace)
    except Unavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for row in rows:
        print(json.dumps(row, default=str))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending database migrations and create the Kafka topics (both idempotent)."""
    settings, state_dir = load_context()
    _migrate(settings, load_spec(settings), state_dir)
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the effective configuration, one ``VARIABLE  value`` per line, secrets masked."""
    settings, _ = load_context()
    rows = render_settings(settings)
    width = max(len(var) for var, _ in rows)
    for var, value in rows:
        print(f"{var.ljust(width)}  {value}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the settings and the cluster file; print OK or the first error."""
    settings = load_settings()
    spec = load_spec(settings)
    print(f"OK: settings valid; cluster file {settings.stack.cluster_file} valid "
          f"({len(spec.serve.deployments)} deployments, {len(spec.pools)} pools, {len(spec.topics)} topics)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chronoverse", description="Chronoverse on Ray")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start the local stack, migrate and deploy")
    up.add_argument("--elastic", action="store_true",
                    help="Ray head on the fake multi-node provider: low/high worker nodes are launched and "
                    "removed by the Ray autoscaler as the pools need them")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="health of every component").set_defaults(func=cmd_status)
    sub.add_parser("migrate", help="apply database migrations, create topics").set_defaults(func=cmd_migrate)
    config = sub.add_parser("config", help="show or check the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_sub.add_parser("show", help="effective configuration, secrets masked").set_defaults(
        func=cmd_config_show)
    config_sub.add_parser("check", help="validate settings and the cluster file").set_defaults(
        func=cmd_config_check)
    deploy = sub.add_parser("deploy", help="deploy onto an existing Ray cluster")
    deploy.add_argument("--address", default="",
                        help="Ray GCS address host:port (default CHRONOVERSE_RAY_ADDRESS)")
    deploy.add_argument("--migrate", action="store_true", help="apply migrations and create topics first")
    deploy.add_argument("--skip-serve", action="store_true",
                        help="leave the Serve application alone (KubeRay: the RayService owns it)")
    deploy.set_defaults(func=cmd_deploy)
    outbox = sub.add_parser("outbox", help="outbox maintenance")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    redrive = outbox_sub.add_parser("redrive", help="re-queue DEAD outbox rows")
    redrive.add_argument("--topic", default=None)
    redrive.add_argument("--key", default=None, help="Kafka key (workflow id)")
    redrive.set_defaults(func=cmd_outbox_redrive)
    autoscaler = sub.add_parser("autoscaler", help="pool autoscaler: simulate a policy, explain decisions")
    auto_sub = autoscaler.add_subparsers(dest="autoscaler_command", required=True, metavar="ACTION")
    simulate = auto_sub.add_parser("simulate", help="replay a load trace through a pool's policy")
    simulate.add_argument("--policy", default="deploy/chronoverse.yaml", help="cluster file with the policy")
    simulate.add_argument("--pool", default="execution-worker")
    simulate.add_argument("--trace", required=True, help="CSV: t_s,jobs_per_s,job_duration_s")
    simulate.add_argument("--out", default="sim.png", help="PNG timeline to write")
    simulate.add_argument("--startup-s", type=float, default=3.0, help="seconds until a new actor serves")
    simulate.add_argument("--tail-s", type=float, default=180.0, help="seconds simulated after the trace")
    simulate.set_defaults(func=cmd_autoscaler_simulate)
    auto_sub.add_parser("explain", help="current decision and inputs per pool").set_defaults(
        func=cmd_autoscaler_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ClusterFileError) as err:
        print(str(err), file=sys.stderr)
        return 2
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        if args.command == "up":
            print("what did start keeps running: `chronoverse status` shows it, `chronoverse down` stops it",
                  file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return 0
    except KeyboardInterrupt:
        print("interrupted; `chronoverse down` stops whatever was started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
