"""Regenerate the gRPC modules of :mod:`serve_apps.grpc.v1` from its ``.proto`` files.

``python -m serve_apps.grpc.codegen`` (``make protos``) writes ``<name>_pb2.py``, ``<name>_pb2.pyi``
and ``<name>_pb2_grpc.py`` beside each proto.  The protos are compiled with the repository root as
the include path, so the generated modules import each other as ``serve_apps.grpc.v1.*`` — the
installed package, which Serve's proxy process can import (SPEC §9).

Needs ``grpcio-tools`` (a development dependency); the protoc it bundles decides the generated
text, so ``tests/unit/test_grpc_codegen.py`` regenerates into a temporary directory and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The repository root: the include path, so generated imports name the installed package.
ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = Path(__file__).resolve().parent / "v1"


def proto_files() -> list[Path]:
    """The ``.proto`` files of the API, in a stable order."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generated_names(proto: Path) -> list[str]:
    """The file names ``protoc`` generates for ``proto``."""
    return [f"{proto.stem}_pb2.py", f"{proto.stem}_pb2.pyi", f"{proto.stem}_pb2_grpc.py"]


def generate(out_root: Path) -> list[Path]:
    """Compile every proto into ``out_root`` (mirroring the repository layout, so the modules land
    in ``out_root/serve_apps/grpc/v1``); returns the generated files."""
    from grpc_tools import protoc  # development dependency: imported only when generating

    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    sources = [str(p.relative_to(ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"--proto_path={ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {', '.join(sources)}")
    out_dir = out_root / PROTO_DIR.relative_to(ROOT)
    return [out_dir / name for proto in proto_files() for name in generated_names(proto)]


def main() -> None:
    """Regenerate in place (the repository root is the output root)."""
    for path in generate(ROOT):
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
    sys.exit(0)
