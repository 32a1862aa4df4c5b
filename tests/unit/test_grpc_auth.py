"""The gRPC API's caller is the owner of the bearer token in the ``authorization`` metadata."""

from __future__ import annotations

import pytest

from domain.errors import Unauthenticated
from serve_apps.grpc.auth import bearer_token


def test_the_bearer_token_is_read_from_the_authorization_metadata() -> None:
    metadata = [("application", "chronoverse-grpc"), ("authorization", "Bearer cvt_abc123")]
    assert bearer_token(metadata) == "cvt_abc123"


def test_the_scheme_is_case_insensitive() -> None:
    assert bearer_token([("authorization", "bearer  tok ")]) == "tok"


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("application", "chronoverse-grpc")],
        [("authorization", "Basic dXNlcjpwYXNz")],
        [("authorization", "Bearer ")],
        [("authorization", "tok")],
    ],
)
def test_missing_or_malformed_credentials_are_unauthenticated(metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(metadata)
