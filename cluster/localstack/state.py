"""``<state_dir>/stack.json``: which components this stack runs, their pids, ports and logs."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cluster.localstack.base import ComponentRecord, StackError
from domain.enums import StackComponent

STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"


class StackState(BaseModel):
    """The persisted state of one local stack."""

    model_config = ConfigDict(extra="forbid")

    state_dir: str
    components: dict[StackComponent, ComponentRecord] = Field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Environment overrides that point clients at the recorded components."""
        out: dict[str, str] = {}
        for record in self.components.values():
            out.update(record.env)
        return out

    @classmethod
    def path(cls, state_dir: Path) -> Path:
        return state_dir / STATE_FILE

    @classmethod
    def load(cls, state_dir: Path) -> StackState | None:
        """The recorded state, or ``None`` when no stack was started in ``state_dir``."""
        file = cls.path(state_dir)
        try:
            return cls.model_validate_json(file.read_text())
        except FileNotFoundError:
            return None
        except (ValidationError, ValueError) as err:
            raise StackError("stack", f"{file} is unreadable ({err.__class__.__name__}); "
                             "stop leftover processes by hand and delete it") from None

    def save(self) -> None:
        """Write atomically, readable by the owner only (it may hold the database password)."""
        file = self.path(Path(self.state_dir))
        tmp = file.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.model_dump_json(indent=2))
        tmp.replace(file)

    def remove(self) -> None:
        self.path(Path(self.state_dir)).unlink(missing_ok=True)


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Serialise ``up``/``down`` on one state directory (two terminals, or a test and a user)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / LOCK_FILE).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
