"""Read and validate the cluster file (``deploy/chronoverse.yaml``)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from domain.topology import ClusterSpec


class ClusterFileError(Exception):
    """The cluster file is missing or invalid; the message names the path and the key."""


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except FileNotFoundError:
        raise ClusterFileError(f"cluster file not found: {file}") from None
    except yaml.YAMLError as err:
        raise ClusterFileError(f"{file}: not valid YAML: {err}") from None
    try:
        return ClusterSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = first["msg"].removeprefix("Value error, ")
        raise ClusterFileError(f"{file}: {where}: {msg}") from None
