"""``[actors.NAME]`` entries: their shape, the class each names, its settings, and the slice of the
configuration it is given.

An actor class declares ``Settings`` (a :mod:`conf.schema` dataclass; the default has no settings) and
``uses``, the global sections or single keys it reads. Secrets (``device.token``) are given only to actors
that name them, so an actor that does not send the token never holds it.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Protocol

import messages
from conf.schema import ConfigError, one_of, parse, setting

SECRETS = frozenset({("device", "token"), ("credentials", "mqtt_password")})


class ConfiguredActor(Protocol):
    """What configuration needs of the actor an entry names (``actors.runtime.base.FleetletActor`` has it)."""

    Settings: type  # the schema dataclass of its [actors.NAME.settings] table
    uses: tuple[str, ...]  # the global sections and keys it reads

    @classmethod
    def check_config(cls, config: dict) -> None: ...


@dataclass(frozen=True)
class ActorEntry:
    cls: str = setting(key="class")  # import path: package.module.Class
    subscribes: tuple[str, ...] = ()  # message type names routed to it
    enabled: bool = True
    on_limit: str = setting("", rule=one_of("", "escalate", "cooldown"))  # "": the supervisor's
    settings: dict = dataclasses.field(default_factory=dict)


def resolve(name: str, path: str) -> type[ConfiguredActor]:
    """Import the class an entry names; importing its module registers the message types it defines."""
    module, _, attribute = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute, None)
    except ImportError as exc:
        raise ConfigError(f"actors.{name}.class: cannot import {module or attribute}: {exc}") from None
    if found is None:
        raise ConfigError(f"actors.{name}.class: {module} has no {attribute}")
    return found


def check_actors(config: dict) -> dict[str, type[ConfiguredActor]]:
    """Every entry's shape; for the enabled ones, the class, the message types, the settings table and the
    class's own rules on the keys it uses (``check_config``).

    Returns the enabled entries' classes. Called by ``conf.load`` before anything starts, and by the
    supervisor at boot (which also registers the message types in its process, so that they route).
    """
    entries = {name: parse(ActorEntry, table, f"actors.{name}") for name, table in config["actors"].items()}
    enabled = {name: entry for name, entry in entries.items() if entry.enabled}
    classes = {name: resolve(name, entry.cls) for name, entry in enabled.items()}
    known = set(messages.registered())
    for name, entry in enabled.items():
        unknown = set(entry.subscribes) - known
        if unknown:
            raise ConfigError(f"actors.{name}.subscribes names unknown message types {sorted(unknown)}")
        parse(classes[name].Settings, entry.settings, f"actors.{name}.settings")
        classes[name].check_config(config_slice(config, classes[name].uses))
    return classes


def config_slice(config: dict, uses: tuple[str, ...]) -> dict:
    """The sections (``"store"``) and keys (``"device.uuid"``) of ``config`` that ``uses`` names.

    A whole section leaves its secrets out; a secret is given only when named as a key.
    """
    sliced: dict = {}
    for item in uses:
        section, _, key = item.partition(".")
        if key:
            sliced.setdefault(section, {})[key] = config[section][key]
        elif isinstance(config[section], dict):
            kept = {k: v for k, v in config[section].items() if (section, k) not in SECRETS}
            sliced[section] = {**kept, **sliced.get(section, {})}
        else:
            sliced[section] = config[section]
    return sliced
