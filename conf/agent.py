"""The agent's global sections, declared: their types and value rules (``conf/agent.toml`` documents them).

The defaults here equal the file's (a test keeps them so); the file stays the operator's reference, the
classes are what checks it. Cross-field rules sit in ``check()``.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from conf.schema import (
    LOG_LEVELS,
    PORT,
    ConfigError,
    at_least,
    between,
    non_empty,
    non_negative,
    one_of,
    positive,
    setting,
)
from messages.protocol.shadow_document import ShadowError
from messages.protocol.shadow_topics import validate_shadow_name

SHADOW_PROFILES = ("aws", "emqx")


def _url(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else f"must start with http:// or https://, got {value!r}"


def _ip_address(value: str) -> str | None:
    """An IPv4 or IPv6 address without brackets, or "" (every interface)."""
    try:
        ipaddress.ip_address(value) if value else None
    except ValueError:
        return f"must be an IP address (or \"\" for every interface), got {value!r}"
    return None


def _functions(paths: tuple[str, ...]) -> str | None:
    """``package.module:function`` each (the listener imports them when it starts)."""
    wrong = [path for path in paths if not all(path.partition(":")[::2]) or path.count(":") != 1]
    return f"must be 'package.module:function' paths, got {wrong[0]!r}" if wrong else None


@dataclass(frozen=True)
class DeviceSection:
    uuid: str = setting("demo-device", rule=non_empty)
    thing: str = setting("demo-device", rule=non_empty)
    token: str = "demo-token"


@dataclass(frozen=True)
class MqttSection:
    host: str = setting("127.0.0.1", rule=non_empty)
    port: int = setting(1883, rule=PORT)
    protocol: int = setting(5, rule=one_of(4, 5))
    keepalive: int = setting(30, rule=between(0, 65535))  # MQTT's two-byte keep-alive
    session_expiry: int = setting(604800, rule=between(0, 2**32 - 1))  # MQTT 5's four-byte interval
    reconnect_min: float = setting(0.5, rule=positive)
    reconnect_max: float = setting(60.0, rule=positive)

    def check(self) -> None:
        if self.reconnect_min > self.reconnect_max:
            raise ConfigError("reconnect_min must be positive and at most mqtt.reconnect_max")


@dataclass(frozen=True)
class CloudSection:
    url: str = setting("http://127.0.0.1:8080", rule=_url)
    timeout: float = setting(10.0, rule=positive)


@dataclass(frozen=True)
class ShadowSection:
    profile: str = setting("aws", rule=one_of(*SHADOW_PROFILES))
    names: tuple[str, ...] = ("",)
    handlers: tuple[str, ...] = setting((), rule=_functions)
    report_timeout: float = setting(5.0, rule=positive)
    read_timeout: float = setting(5.0, rule=positive)
    apply_timeout: float = setting(10.0, rule=positive)
    report_version: bool = True
    conflict_retries: int = setting(3, rule=non_negative)
    max_payload: int = setting(131072, rule=at_least(1024))

    def check(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"names must be distinct strings, got {list(self.names)!r}")
        for name in filter(None, self.names):
            if self.profile == "emqx":
                raise ConfigError(f"names: profile 'emqx' has only the classic shadow, got {name!r}")
            try:
                validate_shadow_name(name)
            except ShadowError as exc:
                raise ConfigError(f"names: {name!r}: {exc.message}") from None


@dataclass(frozen=True)
class StoreSection:
    path: str = setting("var/agent.db", rule=non_empty)
    synchronous: str = setting("FULL", rule=one_of("FULL", "NORMAL"))


@dataclass(frozen=True)
class AgentSection:
    admin_port: int = setting(19500, rule=PORT)
    log_level: str = setting("INFO", rule=one_of(*LOG_LEVELS))
    stop_timeout: float = setting(10.0, rule=positive)


@dataclass(frozen=True)
class SupervisorSection:
    restart_base_delay: float = setting(0.2, rule=positive)
    restart_max_delay: float = setting(30.0, rule=positive)
    intensity: int = setting(5, rule=non_negative)
    period: float = setting(60.0, rule=positive)
    on_limit: str = setting("cooldown", rule=one_of("escalate", "cooldown"))
    cooldown: float = setting(60.0, rule=positive)
    hold_limit: int = setting(1000, rule=at_least(1))


@dataclass(frozen=True)
class PolicySection:
    """What a target state may do to the device (actors.target.policy); the device owner's, not the cloud's."""
    allow_loopback_ports: bool = False
    bind_address: str = setting("", rule=_ip_address)


SECTIONS = {"device": DeviceSection, "mqtt": MqttSection, "cloud": CloudSection, "shadow": ShadowSection,
            "store": StoreSection, "agent": AgentSection, "supervisor": SupervisorSection,
            "policy": PolicySection}
