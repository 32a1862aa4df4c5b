"""Settings: Go durations, the seed's defaults, and one clear line for every bad value."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.settings import ConfigError, load_settings, render_settings
from domain.durations import format_duration, parse_duration

REPO_ROOT = Path(__file__).resolve().parents[2]


# -- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30.5)),
        ("1.5h", timedelta(minutes=90)),
        ("336h", timedelta(hours=336)),
        ("250us", timedelta(microseconds=250)),
        ("0", timedelta(0)),
        ("-5s", timedelta(seconds=-5)),
        (" 10s ", timedelta(seconds=10)),
    ],
)
def test_go_duration_strings_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "5", "1d", "ms", "h1", "1h 30m", "1hh", "five seconds", "-",
     "1.2.3s"],
)
def test_malformed_duration_is_rejected_with_the_accepted_syntax(text: str) -> None:
    with pytest.raises(ValueError, match="Go duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(seconds=5), "5s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1), "1h0m0s"),
        (timedelta(hours=1, minutes=30), "1h30m0s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=-2), "-2s"),
    ],
)
def test_durations_format_the_way_go_prints_them(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


@pytest.mark.parametrize("text", ["500ms", "1h30m", "336h", "2m0.25s", "45s", "100ms"])
def test_formatted_duration_parses_back_to_the_same_value(text: str) -> None:
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value


# -- defaults ------------------------------------------------------------------------------------

#: The seed's defaults quoted by issue 2 (reference §10), plus the other §10 values we keep unchanged.
SEED_DEFAULTS = {
    "POSTGRES_MAX_CONNS": "10",
    "POSTGRES_MIN_CONNS": "5",
    "POSTGRES_MAX_CONN_LIFE": "1h",
    "POSTGRES_MAX_CONN_IDLE": "30m",
    "POSTGRES_DIAL_TIMEOUT": "5s",
    "CLICKHOUSE_HOSTS": "localhost:9000",
    "CLICKHOUSE_MAX_OPEN_CONNS": "10",
    "CLICKHOUSE_MAX_IDLE_CONNS": "5",
    "CLICKHOUSE_CONN_MAX_LIFETIME": "1h",
    "REDIS_POOL_SIZE": "10",
    "REDIS_MIN_IDLE_CONNS": "5",
    "REDIS_READ_TIMEOUT": "5s",
    "REDIS_WRITE_TIMEOUT": "5s",
    "REDIS_MAX_MEMORY": "100mb",
    "GRPC_REQUEST_TIMEOUT": "500ms",
    # reference §10, beyond the list
    "POSTGRES_HOST": "localhost",
    "POSTGRES_PORT": "5432",
    "POSTGRES_USER": "postgres",
    "POSTGRES_DB": "chronoverse",
    "CLICKHOUSE_DATABASE": "default",
    "CLICKHOUSE_USERNAME": "default",
    "CLICKHOUSE_DIAL_TIMEOUT": "5s",
    "REDIS_HOST": "localhost",
    "REDIS_PORT": "6379",
    "REDIS_DB": "0",
    "REDIS_EVICTION_POLICY_SAMPLE_SIZE": "5",
    "SERVER_READ_TIMEOUT": "2s",
    "SERVER_READ_HEADER_TIMEOUT": "1s",
    "SERVER_IDLE_TIMEOUT": "30s",
    "SERVER_REQUEST_BODY_LIMIT": "4194304",
    "SERVER_SESSION_EXPIRY": "2h",
    "SERVER_SAME_SITE_MODE": "STRICT",
    "KAFKA_TOPIC_REPLICATION_FACTOR": "1",
    "SCHEDULING_WORKER_POLL_INTERVAL": "10s",
    "SCHEDULING_WORKER_BATCH_SIZE": "1000",
    "WORKFLOW_WORKER_IMAGE_PULL_RETRY_INTERVAL": "500ms",
    "EXECUTION_WORKER_LEASE_DURATION": "30s",
    "EXECUTION_WORKER_SYSTEM_RETRY_LIMIT": "3",
    "EXECUTION_WORKER_JOB_LOG_LIVE_BUFFER_SIZE": "4096",
    "JOBLOGS_PROCESSOR_BATCH_JOB_LOGS_TIME_INTERVAL": "2s",
    "ANALYTICS_PROCESSED_EVENTS_RETENTION": "336h",
    "OUTBOX_RELAY_MAX_ATTEMPTS": "10",
    "OUTBOX_RELAY_PUBLISHED_RETENTION": "168h",
}


#: Seed defaults we change on purpose: variable -> (seed value, our value).
DELIBERATE_CHANGES = {
    # Sessions and locks live in Redis and must never be evicted (SPEC §5.5).
    "REDIS_EVICTION_POLICY": ("allkeys-lru", "noeviction"),
    # Ray Serve's HTTP proxy is the gateway; 8080 → 8000, and loopback rather than every interface.
    "SERVER_PORT": ("8080", "8000"),
}


def _same(rendered: str, seed: str) -> bool:
    try:
        return parse_duration(rendered) == parse_duration(seed)
    except ValueError:
        return rendered == seed


def test_every_seed_default_is_the_loaded_default(clean_env: pytest.MonkeyPatch) -> None:
    rendered = dict(render_settings(load_settings()))
    wrong = {var: (rendered.get(var), seed) for var, seed in SEED_DEFAULTS.items()
             if var not in rendered or not _same(rendered[var], seed)}
    assert wrong == {}


def test_deliberate_changes_from_the_seed_are_in_effect(clean_env: pytest.MonkeyPatch) -> None:
    rendered = dict(render_settings(load_settings()))
    assert {var: rendered[var] for var in DELIBERATE_CHANGES} == {
        var: ours for var, (_, ours) in DELIBERATE_CHANGES.items()
    }


def test_typed_defaults_are_durations_not_strings(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.postgres.max_conn_life == timedelta(hours=1)
    assert settings.grpc.request_timeout == timedelta(milliseconds=500)
    assert settings.redis.read_timeout == timedelta(seconds=5)


def test_environment_overrides_a_default(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("POSTGRES_MAX_CONN_IDLE", "1h30m")
    clean_env.setenv("REDIS_POOL_SIZE", "32")
    settings = load_settings()
    assert settings.postgres.max_conn_idle == timedelta(minutes=90)
    assert settings.redis.pool_size == 32


def test_dotenv_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KAFKA_BROKERS=broker-1:9093,broker-2:9093\n")
    assert load_settings().kafka.bootstrap_servers == ["broker-1:9093", "broker-2:9093"]


# -- bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("POSTGRES_MAX_CONNS", "lots"),
        ("POSTGRES_MAX_CONNS", "0"),
        ("POSTGRES_PORT", "70000"),
        ("POSTGRES_MAX_CONN_LIFE", "1d"),
        ("POSTGRES_DIAL_TIMEOUT", "5"),
        ("CLICKHOUSE_BACKEND", "mysql"),
        ("CLICKHOUSE_MAX_IDLE_CONNS", "-1"),
        ("REDIS_MAX_MEMORY", "plenty"),
        ("REDIS_EVICTION_POLICY", "sometimes"),
        ("REDIS_READ_TIMEOUT", "fast"),
        ("KAFKA_SESSION_TIMEOUT", "2 s"),
        ("GRPC_REQUEST_TIMEOUT", "500"),
        ("SERVER_SAME_SITE_MODE", "maybe"),
        ("OUTBOX_RELAY_WORKFLOW_ENABLED", "perhaps"),
        ("EXECUTION_WORKER_CONTAINER_CPUS", "0"),
        ("CHRONOVERSE_RAY_AUTH_MODE", "open"),
        ("ENV", "staging"),
    ],
)
def test_bad_value_fails_with_one_line_naming_the_variable(
    clean_env: pytest.MonkeyPatch, var: str, value: str
) -> None:
    clean_env.setenv(var, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"{var}=" in message
    assert repr(value) in message
    assert "\n" not in message


def test_empty_duration_variable_is_a_config_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("POSTGRES_DIAL_TIMEOUT", "")
    with pytest.raises(ConfigError, match="POSTGRES_DIAL_TIMEOUT"):
        load_settings()


def test_bad_duration_says_what_it_accepts(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SCHEDULING_WORKER_POLL_INTERVAL", "10 seconds")
    with pytest.raises(ConfigError, match=r"SCHEDULING_WORKER_POLL_INTERVAL=.*Go duration such as"):
        load_settings()


def test_grpc_tls_is_refused_rather_than_silently_served_as_plaintext(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GRPC_TLS_ENABLED", "true")
    with pytest.raises(ConfigError, match=r"GRPC_TLS_ENABLED=.*plaintext only; terminate TLS in front"):
        load_settings()


def test_an_outbox_lease_that_would_end_a_claim_mid_publish_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OUTBOX_RELAY_CONTEXT_TIMEOUT", "20s")
    clean_env.setenv("OUTBOX_RELAY_PROCESSING_LEASE", "20s")
    with pytest.raises(ConfigError, match=r"^invalid configuration: OUTBOX_RELAY_PROCESSING_LEASE='20s': "
                                          r"must be longer than OUTBOX_RELAY_CONTEXT_TIMEOUT"):
        load_settings()
    clean_env.setenv("OUTBOX_RELAY_PROCESSING_LEASE", "21s")
    assert load_settings().outbox.processing_lease.total_seconds() == 21


# -- the CLI's view of the same ------------------------------------------------------------------


def test_cli_bad_value_prints_one_line_and_exits_2(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("REDIS_POOL_SIZE", "ten")
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "REDIS_POOL_SIZE" in err


def test_cli_config_check_accepts_the_shipped_configuration(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("CHRONOVERSE_CLUSTER_FILE", str(REPO_ROOT / "deploy" / "chronoverse.yaml"))
    assert main(["config", "check"]) == 0
    assert capsys.readouterr().out.startswith("OK")


def test_cli_config_show_masks_secrets(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("POSTGRES_PASSWORD", "hunter2-secret")
    clean_env.setenv("POSTGRES_MAX_CONNS", "42")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2-secret" not in out
    lines = dict(line.split(None, 1) for line in out.splitlines() if len(line.split(None, 1)) == 2)
    assert lines["POSTGRES_PASSWORD"] == "********"
    assert lines["POSTGRES_MAX_CONNS"] == "42"
