"""The committed gRPC modules are what ``make protos`` generates from the committed protos, and the
Serve options name servicer functions that exist."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from serve_apps.grpc import codegen
from serve_apps.grpc.deployment import GRPC_SERVICER_FUNCTIONS


def test_generated_modules_match_the_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) generates the modules")
    generated = codegen.generate(tmp_path)
    assert generated, "no proto files found"
    stale = []
    for path in generated:
        committed = codegen.PROTO_DIR / path.name
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(path.name)
    assert not stale, f"stale generated gRPC modules {stale}: run `make protos`"


def test_no_generated_module_is_left_without_its_proto() -> None:
    expected = {name for proto in codegen.proto_files() for name in codegen.generated_names(proto)}
    on_disk = {p.name for p in codegen.PROTO_DIR.iterdir() if "_pb2" in p.name}
    assert on_disk == expected


@pytest.mark.parametrize("path", GRPC_SERVICER_FUNCTIONS)
def test_servicer_functions_are_importable_from_the_installed_package(path: str) -> None:
    module, _, function = path.rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))
