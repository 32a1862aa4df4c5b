"""The numbered ClickHouse migrations shipped as package data in ``store/clickhouse/``.

A file ``NNNN_<name>.sql`` holds one or more statements, each ending with ``;`` at the end of a
line.  Statements must be idempotent (``IF NOT EXISTS``), so re-running a migration that was
interrupted (left *dirty*) is safe.
"""

from __future__ import annotations

import re
from importlib import resources

from pydantic import BaseModel, ConfigDict

_FILE = re.compile(r"^(\d+)_([a-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)


class Migration(BaseModel):
    """One numbered migration file, split into statements."""

    model_config = ConfigDict(frozen=True)

    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(text: str) -> tuple[str, ...]:
    """Split on ``;`` at line ends; drop pieces that hold only comments or blank lines."""
    statements = []
    for piece in _STATEMENT_END.split(text):
        code = [line for line in piece.splitlines() if line.strip() and not line.strip().startswith("--")]
        if code:
            statements.append(piece.strip())
    return tuple(statements)


def load_migrations() -> list[Migration]:
    """All migrations in version order.  Raises ``ValueError`` on a duplicate version."""
    folder = resources.files("store").joinpath("clickhouse")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"duplicate ClickHouse migration version {version}: {entry.name}")
        found[version] = Migration(
            version=version,
            name=match.group(2),
            statements=split_statements(entry.read_text(encoding="utf-8")),
        )
    return [found[v] for v in sorted(found)]
