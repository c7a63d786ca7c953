"""Configuration: TOML files whose defaults live beside this module.

The default file of each kind (``agent.toml``, ``cloud.toml``) is also its schema: a key that the default
file does not have is unknown, and a value whose type differs from the default's is wrong. The one open
table is ``[actors.NAME]``, so that a new actor type needs only a configuration entry.
"""
from __future__ import annotations

import copy
import pathlib
import tomllib

DEFAULTS_DIR = pathlib.Path(__file__).resolve().parent

# [actors.NAME] entries: key -> (type, required)
ACTOR_ENTRY = {"class": (str, True), "subscribes": (list, False), "enabled": (bool, False),
               "on_limit": (str, False), "settings": (dict, False)}


class ConfigError(ValueError):
    """A configuration file or override is wrong; the text names the key."""


def defaults(kind: str) -> dict:
    path = DEFAULTS_DIR / f"{kind}.toml"
    if not path.is_file():
        raise ConfigError(f"no default configuration for {kind!r}")
    with path.open("rb") as fh:
        return tomllib.load(fh)


def load(kind: str, path: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> dict:
    """Defaults of ``kind``, then the file at ``path``, then ``section.key=value`` overrides."""
    base = defaults(kind)
    config = copy.deepcopy(base)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                user = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        _merge(config, user, base, prefix="")
    for item in overrides:
        key, value = _parse_override(item)
        _merge(config, _nest(key, value), base, prefix="")
    for name, entry in config.get("actors", {}).items():
        _check_actor_entry(name, entry)
    return config


def _parse_override(item: str) -> tuple[str, object]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or "." not in key:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word is a string: --set device.thing=pump-7
    return key, value


def _nest(dotted: str, value) -> dict:
    parts = dotted.split(".")
    node = value
    for part in reversed(parts):
        node = {part: node}
    return node


def _merge(config: dict, user: dict, schema: dict, prefix: str) -> None:
    for key, value in user.items():
        name = f"{prefix}{key}"
        if prefix == "actors.":  # an open table: NAME -> entry
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a table")
            entry = config.setdefault(key, {})
            for field, setting in copy.deepcopy(value).items():
                if field == "settings" and isinstance(setting, dict) and isinstance(entry.get(field), dict):
                    entry[field] = {**entry[field], **setting}  # one setting changed keeps the others
                else:
                    entry[field] = setting
            continue
        if key not in schema:
            raise ConfigError(f"unknown configuration key {name!r}")
        expected = schema[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a table, got {type(value).__name__}")
            _merge(config[key], value, expected, prefix=f"{name}.")
            continue
        config[key] = _typed(name, value, expected)


def _typed(name: str, value, expected):
    if isinstance(expected, bool) or isinstance(value, bool):
        ok = isinstance(expected, bool) and isinstance(value, bool)
    elif isinstance(expected, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(expected))
    if not ok:
        raise ConfigError(f"{name} must be {type(expected).__name__}, got {type(value).__name__} {value!r}")
    return value


def _check_actor_entry(name: str, entry: dict) -> None:
    for key, value in entry.items():
        if key not in ACTOR_ENTRY:
            raise ConfigError(f"unknown configuration key 'actors.{name}.{key}'")
        kind = ACTOR_ENTRY[key][0]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(f"actors.{name}.{key} must be {kind.__name__}, got {type(value).__name__}")
    for key, (_, required) in ACTOR_ENTRY.items():
        if required and key not in entry:
            raise ConfigError(f"actors.{name} needs '{key}'")
    if not all(isinstance(t, str) for t in entry.get("subscribes", [])):
        raise ConfigError(f"actors.{name}.subscribes must be a list of message type names")
    if entry.get("on_limit", "escalate") not in ("escalate", "cooldown"):
        raise ConfigError(f"actors.{name}.on_limit must be 'escalate' or 'cooldown'")
