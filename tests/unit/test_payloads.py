"""Payload validation per kind (reference §4; checklist items 12-13; our RAY kind)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from domain.enums import WorkflowKind
from domain.errors import Invalid, PreconditionFailed
from domain.payloads import (
    ContainerPayload,
    HeartbeatPayload,
    RayPayload,
    build_hash,
    parse_payload_text,
    validate_payload,
)

HB = WorkflowKind.HEARTBEAT
CT = WorkflowKind.CONTAINER
RAY = WorkflowKind.RAY


def hb(**fields: object) -> str:
    return json.dumps({"endpoint": "http://example.test/health", **fields})


def ct(**fields: object) -> str:
    return json.dumps({"image": "local/busybox:1", **fields})


def ray(**fields: object) -> str:
    return json.dumps({"callable": "pkg.mod:run", **fields})


# -- the JSON envelope ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["{", "not json", "[1, 2]", '"a string"', "42", "null"])
def test_payload_that_is_not_a_json_object_is_invalid(text: str) -> None:
    with pytest.raises(Invalid, match="invalid payload format"):
        parse_payload_text(text)


def test_decoded_mapping_is_accepted_as_is() -> None:
    assert parse_payload_text({"a": 1}) == {"a": 1}


# -- HEARTBEAT -----------------------------------------------------------------------------------


def test_heartbeat_defaults() -> None:
    payload = validate_payload(HB, hb())
    assert payload == HeartbeatPayload(
        endpoint="http://example.test/health",
        expected_status_code=200,
        headers={},
        timeout=timedelta(seconds=10),
    )


@pytest.mark.parametrize("body", ["{}", '{"endpoint": ""}', '{"endpoint": null}'])
def test_heartbeat_without_endpoint_is_invalid(body: str) -> None:
    with pytest.raises(Invalid, match=r"payload\.endpoint is required"):
        validate_payload(HB, body)


def test_heartbeat_endpoint_must_be_a_string() -> None:
    with pytest.raises(Invalid, match=r"payload\.endpoint must be a string"):
        validate_payload(HB, '{"endpoint": 5}')


def test_heartbeat_endpoint_is_not_url_validated() -> None:
    assert validate_payload(HB, '{"endpoint": "anything at all"}').endpoint == "anything at all"  # type: ignore[union-attr]


@pytest.mark.parametrize("code", [99, 600, -1, 1000])
def test_heartbeat_status_outside_100_599_is_invalid(code: int) -> None:
    with pytest.raises(Invalid, match=r"payload\.expected_status_code must be between 100 and 599"):
        validate_payload(HB, hb(expected_status_code=code))


@pytest.mark.parametrize("code", [100, 204, 599, 301.0])
def test_heartbeat_status_inside_range_is_accepted(code: float) -> None:
    assert validate_payload(HB, hb(expected_status_code=code)).expected_status_code == int(code)  # type: ignore[union-attr]


@pytest.mark.parametrize("code", ["200", True, 200.5, [200]])
def test_heartbeat_status_must_be_an_integer(code: object) -> None:
    with pytest.raises(Invalid, match=r"payload\.expected_status_code must be an integer"):
        validate_payload(HB, hb(expected_status_code=code))


def test_heartbeat_headers_accept_strings_and_string_arrays() -> None:
    payload = validate_payload(HB, hb(headers={"X-One": "a", "X-Many": ["b", "c"]}))
    assert payload.headers == {"X-One": ["a"], "X-Many": ["b", "c"]}  # type: ignore[union-attr]


@pytest.mark.parametrize("headers", [{"X": 1}, {"X": ["a", 2]}, {"X": {"a": "b"}}, ["X"], "X: y"])
def test_heartbeat_bad_header_values_are_invalid(headers: object) -> None:
    with pytest.raises(Invalid, match=r"payload\.headers"):
        validate_payload(HB, hb(headers=headers))


@pytest.mark.parametrize(("timeout", "expected"), [("1s", 1), ("5m", 300), ("500ms", 0.5), ("4m59s", 299)])
def test_heartbeat_timeout_up_to_five_minutes_is_accepted(timeout: str, expected: float) -> None:
    assert validate_payload(HB, hb(timeout=timeout)).timeout == timedelta(seconds=expected)  # type: ignore[union-attr]


@pytest.mark.parametrize("timeout", ["6m", "5m1s", "1h"])
def test_heartbeat_timeout_above_five_minutes_is_precondition_failed(timeout: str) -> None:
    with pytest.raises(PreconditionFailed, match=r"payload\.timeout must be at most 5m0s"):
        validate_payload(HB, hb(timeout=timeout))


@pytest.mark.parametrize("timeout", ["0s", "0", "-1s"])
def test_heartbeat_timeout_not_positive_is_invalid(timeout: str) -> None:
    with pytest.raises(Invalid, match=r"payload\.timeout must be greater than 0"):
        validate_payload(HB, hb(timeout=timeout))


@pytest.mark.parametrize("timeout", ["soon", "10", "1d", ""])
def test_heartbeat_unparsable_timeout_is_invalid(timeout: str) -> None:
    with pytest.raises(Invalid, match=r"payload\.timeout"):
        validate_payload(HB, hb(timeout=timeout))


@pytest.mark.parametrize("timeout", [30, 1.5, None, True, ["1s"]])
def test_heartbeat_non_string_timeout_takes_the_default(timeout: object) -> None:
    assert validate_payload(HB, hb(timeout=timeout)).timeout == timedelta(seconds=10)  # type: ignore[union-attr]


def test_heartbeat_has_no_build_hash() -> None:
    assert build_hash(validate_payload(HB, hb())) is None


# -- CONTAINER -----------------------------------------------------------------------------------


def test_container_defaults() -> None:
    assert validate_payload(CT, ct()) == ContainerPayload(
        image="local/busybox:1", cmd=[], env={}, timeout=timedelta(seconds=30)
    )


@pytest.mark.parametrize("body", ["{}", '{"image": ""}', '{"image": null}'])
def test_container_without_image_is_invalid(body: str) -> None:
    with pytest.raises(Invalid, match=r"payload\.image is required"):
        validate_payload(CT, body)


@pytest.mark.parametrize("image", [5, "   ", ["busybox"]])
def test_container_image_must_be_a_non_empty_string(image: object) -> None:
    with pytest.raises(Invalid, match=r"payload\.image must be a non-empty string"):
        validate_payload(CT, ct(image=image))


def test_container_cmd_and_env_are_kept() -> None:
    payload = validate_payload(CT, ct(cmd=["sh", "-c", "echo hi"], env={"A": "1", "B": ""}))
    assert payload.cmd == ["sh", "-c", "echo hi"]  # type: ignore[union-attr]
    assert payload.env == {"A": "1", "B": ""}  # type: ignore[union-attr]


@pytest.mark.parametrize("cmd", [["echo", 1], ["echo", None], [["nested"]]])
def test_container_non_string_cmd_item_is_invalid(cmd: list[object]) -> None:
    with pytest.raises(Invalid, match=r"payload\.cmd\[\d\] must be a string"):
        validate_payload(CT, ct(cmd=cmd))


def test_container_cmd_must_be_an_array() -> None:
    with pytest.raises(Invalid, match=r"payload\.cmd must be an array"):
        validate_payload(CT, ct(cmd="echo hi"))


@pytest.mark.parametrize("value", [1, True, None, ["x"]])
def test_container_non_string_env_value_is_invalid(value: object) -> None:
    with pytest.raises(Invalid, match=r"payload\.env\.A must be a string"):
        validate_payload(CT, ct(env={"A": value}))


@pytest.mark.parametrize("env", [["A=1"], "A=1"])
def test_container_env_must_be_an_object(env: object) -> None:
    with pytest.raises(Invalid, match=r"payload\.env must be an object"):
        validate_payload(CT, ct(env=env))


@pytest.mark.parametrize("name", ["", "A=B"])
def test_container_env_names_must_be_usable(name: str) -> None:
    with pytest.raises(Invalid, match=r"payload\.env: invalid variable name"):
        validate_payload(CT, ct(env={name: "x"}))


def test_container_timeout_of_one_hour_is_accepted() -> None:
    assert validate_payload(CT, ct(timeout="1h")).timeout == timedelta(hours=1)  # type: ignore[union-attr]


@pytest.mark.parametrize("timeout", ["2h", "61m", "1h0m1s"])
def test_container_timeout_above_one_hour_is_precondition_failed(timeout: str) -> None:
    with pytest.raises(PreconditionFailed, match=r"payload\.timeout must be at most 1h0m0s"):
        validate_payload(CT, ct(timeout=timeout))


def test_container_bad_timeout_is_invalid() -> None:
    with pytest.raises(Invalid, match=r"payload\.timeout"):
        validate_payload(CT, ct(timeout="-5s"))


def test_container_build_hash_depends_on_the_image_only() -> None:
    base = build_hash(validate_payload(CT, ct()))
    assert base == build_hash(validate_payload(CT, ct(cmd=["x"], env={"A": "b"}, timeout="5s")))
    assert base != build_hash(validate_payload(CT, ct(image="local/other:1")))


def test_container_build_hash_matches_the_seeds_marshalled_image() -> None:
    import hashlib

    expected = hashlib.sha256(b'{"image":"local/busybox:1"}').hexdigest()
    assert build_hash(validate_payload(CT, ct())) == expected


# -- RAY -----------------------------------------------------------------------------------------


def test_ray_defaults() -> None:
    payload = validate_payload(RAY, ray())
    assert isinstance(payload, RayPayload)
    assert (payload.module, payload.function) == ("pkg.mod", "run")
    assert payload.args == [] and payload.kwargs == {} and payload.runtime_env == {}
    assert payload.num_cpus == 1.0 and payload.num_gpus == 0.0 and payload.memory is None
    assert payload.timeout == timedelta(minutes=10)


def test_ray_full_payload_is_accepted() -> None:
    payload = validate_payload(
        RAY,
        ray(
            callable="tasks.jobs:Runner.go",
            args=[1, "two", {"three": 3}],
            kwargs={"flag": True},
            runtime_env={"env_vars": {"A": "1"}, "pip": ["requests"]},
            num_cpus=0.5,
            num_gpus=0,
            memory="512Mi",
            timeout="2h",
        ),
    )
    assert isinstance(payload, RayPayload)
    assert payload.memory == 512 * 1024**2
    assert payload.num_cpus == 0.5
    assert payload.timeout == timedelta(hours=2)


@pytest.mark.parametrize("target", ["", None])
def test_ray_without_callable_is_invalid(target: object) -> None:
    with pytest.raises(Invalid, match=r"payload\.callable is required"):
        validate_payload(RAY, ray(callable=target))


@pytest.mark.parametrize("target", ["module", "mod:", ":fn", "mod:fn()", "a b:c", "mod:1fn", 7])
def test_ray_callable_must_be_module_colon_function(target: object) -> None:
    with pytest.raises(Invalid, match=r"payload\.callable must look like"):
        validate_payload(RAY, ray(callable=target))


def test_ray_unknown_field_is_invalid() -> None:
    with pytest.raises(Invalid, match=r"payload\.image is not a field of a RAY payload"):
        validate_payload(RAY, ray(image="busybox"))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("args", {"a": 1}, r"payload\.args must be an array"),
    ("kwargs", [1], r"payload\.kwargs must be an object"),
    ("kwargs", {"not valid": 1}, r"payload\.kwargs: 'not valid' is not a valid keyword"),
    ("runtime_env", "pip", r"payload\.runtime_env must be an object"),
    ("runtime_env", {"container": {}}, r"payload\.runtime_env\.container is not allowed"),
    ("runtime_env", {"env_vars": {"A": 1}}, r"payload\.runtime_env\.env_vars\.A must be a string"),
    ("num_cpus", -1, r"payload\.num_cpus must be between 0 and 64"),
    ("num_cpus", 65, r"payload\.num_cpus must be between 0 and 64"),
    ("num_cpus", "1", r"payload\.num_cpus must be a number"),
    ("num_gpus", 9, r"payload\.num_gpus must be between 0 and 8"),
    ("memory", "lots", r"payload\.memory must be a byte count"),
    ("memory", 0, r"payload\.memory must be between"),
    ("memory", "300Gi", r"payload\.memory must be between"),
    ("timeout", "0s", r"payload\.timeout must be greater than 0"),
])
def test_ray_bad_fields_are_invalid(field: str, value: object, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        validate_payload(RAY, ray(**{field: value}))


def test_ray_timeout_above_a_day_is_precondition_failed() -> None:
    with pytest.raises(PreconditionFailed, match=r"payload\.timeout must be at most 24h0m0s"):
        validate_payload(RAY, ray(timeout="25h"))


def test_ray_build_hash_follows_the_runtime_env() -> None:
    base = build_hash(validate_payload(RAY, ray(runtime_env={"pip": ["a"]})))
    assert base == build_hash(validate_payload(RAY, ray(callable="other:fn", runtime_env={"pip": ["a"]})))
    assert base != build_hash(validate_payload(RAY, ray(runtime_env={"pip": ["b"]})))


def test_a_payload_is_validated_by_its_kind() -> None:
    with pytest.raises(Invalid, match=r"payload\.image is required"):
        validate_payload(CT, hb())
    with pytest.raises(Invalid, match=r"payload\.endpoint is required"):
        validate_payload(HB, ct())
