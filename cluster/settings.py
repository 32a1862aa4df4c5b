"""Load :class:`domain.config.Settings` from the environment (and an optional ``.env`` file).

Each config area of :mod:`domain.config` declares its seed ``env_prefix``; here it becomes a
``pydantic-settings`` model, so ``POSTGRES_MAX_CONNS`` fills ``postgres.max_conns``.  A bad value
raises :class:`ConfigError` with one line naming the variable and what it accepts.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.config import Section, Settings


class ConfigError(Exception):
    """Invalid configuration.  ``str(err)`` is one line naming the variable."""


@cache
def _env_model(section: type[Section]) -> type[BaseSettings]:
    config = SettingsConfigDict(
        env_prefix=section.env_prefix,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )
    return type(f"{section.__name__}FromEnv", (section, BaseSettings), {"model_config": config})


def _describe(section: type[Section], err: ValidationError) -> str:
    first = err.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    var = f"{section.env_prefix}{field}".upper()
    given = first.get("input")
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    shown = "" if isinstance(given, dict) else f"={given!r}"
    return f"invalid configuration: {var}{shown}: {msg}"


def load_settings() -> Settings:
    """Read every area from the environment; raise :class:`ConfigError` on the first bad value."""
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        section = field.annotation
        assert isinstance(section, type) and issubclass(section, Section)
        try:
            loaded = _env_model(section)()
        except ValidationError as err:
            raise ConfigError(_describe(section, err)) from None
        # Re-validate as the plain domain model: picklable for Ray, no env machinery attached.
        values[name] = section.model_validate(loaded.model_dump())
    return Settings(**values)


def _masked(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            out[name] = "********" if value.get_secret_value() else ""
        elif isinstance(value, BaseModel):
            out[name] = _masked(value)
        else:
            out[name] = value
    return out


def render_settings(settings: Settings) -> list[tuple[str, str]]:
    """``(ENV_VAR, value)`` rows of the effective configuration with secrets masked."""
    rows: list[tuple[str, str]] = []
    dumped = settings.model_dump(mode="json")
    for name, field in Settings.model_fields.items():
        section = field.annotation
        assert isinstance(section, type) and issubclass(section, Section)
        masked = _masked(getattr(settings, name))
        for key in section.model_fields:
            value = masked[key]
            if not isinstance(value, str):
                value = dumped[name][key]
            rows.append(
                (f"{section.env_prefix}{key}".upper(), value if isinstance(value, str) else json.dumps(value))
            )
    return rows
