"""An actor's `[actors.NAME] settings` table, checked against a frozen dataclass that holds the defaults.

The defaults live in code too, so an actor configured outside `conf/agent.toml` (a test, an extension's
own entry) gets them; `conf/agent.toml` documents the same values (a test keeps the two equal).
"""
from __future__ import annotations

import dataclasses
import math
from typing import TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is unknown or has a wrong type or value; the text names it."""


def load_settings(cls: type[T], table: dict, actor: str) -> T:
    """`cls` with the table's values over its defaults; ints are accepted where a float is expected."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        where = f"actors.{actor}.settings.{key}"
        if key not in fields:
            raise SettingsError(f"{where}: unknown setting (known: {', '.join(fields)})")
        default = fields[key].default
        if isinstance(default, float) and type(value) in (int, float):
            value = float(value)
        if type(value) is not type(default):
            raise SettingsError(f"{where} must be {type(default).__name__}, got {type(value).__name__} {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except SettingsError as exc:
        raise SettingsError(f"actors.{actor}.settings.{exc}") from None


def require_positive(settings, *names: str) -> None:
    """For a settings dataclass's __post_init__: these numbers must be finite and > 0."""
    for name in names:
        value = getattr(settings, name)
        if not (math.isfinite(value) and value > 0):
            raise SettingsError(f"{name} must be a positive number, got {value!r}")
