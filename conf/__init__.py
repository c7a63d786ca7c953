"""Configuration: TOML files whose defaults live beside this module, checked whole before anything starts.

The default file of each kind (``agent.toml``, ``cloud.toml``) gives the layout: a key that the default
file does not have is unknown (and in an ``[actors.NAME]`` entry, a key :class:`conf.actors.ActorEntry` does
not declare). The values are then checked by the declared sections (:mod:`conf.schema`
dataclasses: :mod:`conf.agent` for the agent, ``cloud.settings`` for the cloud), and each enabled
``[actors.NAME]`` entry by its class's declared ``Settings`` (:mod:`conf.actors`). The one open table is
``[actors.NAME]``, so that a new actor type needs only a class and a configuration entry.
Every problem is one :class:`ConfigError` whose text names the key.
"""
from __future__ import annotations

import copy
import pathlib
import tomllib

from conf.actors import ActorEntry, check_actors
from conf.agent import SECTIONS as AGENT_SECTIONS
from conf.agent import load_secrets
from conf.schema import ConfigError, as_table, keys, parse

DEFAULTS_DIR = pathlib.Path(__file__).resolve().parent
ENTRY_KEYS = keys(ActorEntry)

__all__ = ["DEFAULTS_DIR", "ConfigError", "defaults", "load", "load_sections"]


def defaults(kind: str) -> dict:
    path = DEFAULTS_DIR / f"{kind}.toml"
    if not path.is_file():
        raise ConfigError(f"no default configuration for {kind!r}")
    return _read(str(path))


def load(kind: str, path: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> dict:
    """Defaults of ``kind``, then the file at ``path``, then ``section.key=value`` overrides, all checked:
    the sections by their declared dataclasses, each enabled actor by its class. Only the agent's sections
    are declared here; the cloud declares its own and reads them with :func:`load_sections`."""
    if kind != "agent":
        raise ConfigError(f"the sections of {kind!r} are not declared in conf: use conf.load_sections")
    config = _layered(kind, path, overrides)
    for name, cls in AGENT_SECTIONS.items():
        config[name] = as_table(parse(cls, config[name], name))
    load_secrets(config)
    check_actors(config)  # imports the enabled actors' classes
    return config


def load_sections(kind: str, path: str | None, overrides: tuple[str, ...] | list[str],
                  sections: dict[str, type]) -> dict:
    """Like :func:`load`, for a kind whose sections are declared elsewhere (the cloud's): name -> checked instance."""
    config = _layered(kind, path, overrides)
    return {name: parse(cls, config[name], name) for name, cls in sections.items()}


def _layered(kind: str, path: str | None, overrides: tuple[str, ...] | list[str]) -> dict:
    base = defaults(kind)
    config = copy.deepcopy(base)
    if path is not None:
        _merge(config, _read(path), base, prefix="")
    for item in overrides:
        key, value = _parse_override(item)
        _merge(config, _nest(key, value), base, prefix="")
    return config


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.loads(fh.read().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


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


def _nest(dotted: str, value: object) -> dict[str, object]:
    *parents, leaf = dotted.split(".")
    node = {leaf: value}
    for part in reversed(parents):
        node = {part: node}
    return node


def _merge(config: dict, user: dict, layout: dict, prefix: str) -> None:
    """Lay ``user`` over ``config`` key by key; values are checked afterwards, by the declared sections."""
    for key, value in user.items():
        name = f"{prefix}{key}"
        if prefix == "actors.":  # an open table: NAME -> entry
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a table")
            entry = config.setdefault(key, {})
            for field, setting in copy.deepcopy(value).items():
                if field not in ENTRY_KEYS:
                    raise ConfigError(f"unknown configuration key '{name}.{field}'")
                if field == "settings" and isinstance(setting, dict) and isinstance(entry.get(field), dict):
                    entry[field] = {**entry[field], **setting}  # one setting changed keeps the others
                else:
                    entry[field] = setting
            continue
        if key not in layout:
            raise ConfigError(f"unknown configuration key {name!r}")
        if isinstance(layout[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a table, got {type(value).__name__}")
            _merge(config[key], value, layout[key], prefix=f"{name}.")
            continue
        config[key] = value
