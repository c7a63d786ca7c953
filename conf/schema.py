"""One way to declare and check settings: a frozen dataclass whose fields carry their value rules.

Used for every section of the agent's and the cloud's configuration and for every actor's settings table,
so a typo, a wrong type or an out-of-range value is refused the same way, with the key named, before
anything starts (OTP's supervisor checks every child spec before starting any child).

A field's type comes from its annotation (``bool``, ``int``, ``float``, ``str``, ``tuple[str, ...]``,
``dict``); an int is accepted where a float is expected. Its rule (``setting(rule=PORT)``) is a pure
function of the value returning what is wrong, or None; ``setting(load=...)`` turns a TOML value into the
field's type first (a table of bounds into tuples). ``load`` and a dataclass's ``check(self)`` (rules across
fields) raise :class:`ConfigError` naming the key relative to the table; the table's name is prefixed.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Rule = Callable[[Any], "str | None"]


class ConfigError(ValueError):
    """A configuration file, override or setting is wrong; the text names the key."""


def setting(default: Any = dataclasses.MISSING, *, rule: Rule | None = None, key: str | None = None,
            load: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field with a value rule; ``key`` is its TOML name when that is a Python keyword (``class``)."""
    return dataclasses.field(default=default, metadata={"rule": rule, "key": key, "load": load})


# -- rules -------------------------------------------------------------------------------------------------------

def between(low: float, high: float) -> Rule:
    return lambda value: None if low <= value <= high else f"must be in {low}..{high}, got {value!r}"


def at_least(minimum: float) -> Rule:
    return lambda value: None if value >= minimum else f"must be at least {minimum}, got {value!r}"


def fraction(value: float) -> str | None:
    """In [0, 1): a jitter band of 1 could make a delay zero."""
    return None if 0 <= value < 1 else f"must be in [0, 1), got {value!r}"


def positive(value: float) -> str | None:
    """Finite and > 0: seconds, sizes and counts that a zero or an infinity would turn into a busy loop or a hang."""
    return None if math.isfinite(value) and value > 0 else f"must be a positive number, got {value!r}"


def non_negative(value: float) -> str | None:
    return None if math.isfinite(value) and value >= 0 else f"must be >= 0, got {value!r}"


def one_of(*choices: Any) -> Rule:
    return lambda value: None if value in choices else \
        f"must be one of {', '.join(map(str, choices))}, got {value!r}"


def non_empty(value: str) -> str | None:
    return None if value != "" else "must not be empty"


PORT = between(1, 65535)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # the agent's and the cloud's log.level / agent.log_level


# -- checking ----------------------------------------------------------------------------------------------------

def keys(cls: type) -> dict[str, dataclasses.Field]:
    """The table keys ``cls`` declares, each with its field."""
    return {field.metadata.get("key") or field.name: field for field in dataclasses.fields(cls)}


def parse(cls: type[T], table: dict, where: str) -> T:
    """``cls`` built from ``table`` over its defaults; ConfigError names ``where.key`` for what is wrong."""
    fields = keys(cls)
    hints = typing.get_type_hints(cls)
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {type(table).__name__}")
    missing = [key for key, field in fields.items() if key not in table and _required(field)]
    if missing:
        raise ConfigError(f"{where} needs '{missing[0]}'")
    values = {}
    for key, value in table.items():
        name = f"{where}.{key}"
        if key not in fields:
            raise ConfigError(f"{name}: unknown setting (known: {', '.join(fields) or 'none'})")
        field = fields[key]
        if field.metadata.get("load") is not None:
            try:
                value = field.metadata["load"](value)
            except ConfigError as exc:
                raise ConfigError(f"{where}.{exc}") from None
        value = _typed(name, value, hints[field.name])
        rule = field.metadata.get("rule")
        problem = rule(value) if rule is not None else None
        if problem:
            raise ConfigError(f"{name} {problem}")
        values[field.name] = value
    instance = cls(**values)
    check = getattr(instance, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc}") from None
    return instance


def as_table(instance: Any) -> dict:
    """The checked values as a TOML-shaped table (tuples back to lists), for the configuration dict."""
    return {key: _plain(getattr(instance, field.name)) for key, field in keys(type(instance)).items()}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _typed(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:  # tuple[X, ...]: a TOML array of X; tuple[X, Y]: an array of two
        items = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {type(value).__name__} {value!r}")
        if items[-1] is Ellipsis:
            items = (items[0],) * len(value)
        elif len(items) != len(value):
            raise ConfigError(f"{name} must have {len(items)} items, got {len(value)}")
        return tuple(_typed(f"{name}[{index}]", element, item)
                     for index, (element, item) in enumerate(zip(value, items, strict=True)))
    expected = origin or hint
    if expected is float and type(value) in (int, float):
        return float(value)
    if type(value) is not expected:  # bool is an int to isinstance, never to a setting
        raise ConfigError(f"{name} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return value
