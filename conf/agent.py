"""The agent's global sections, declared: their types and value rules (``conf/agent.toml`` documents them).

The defaults here equal the file's (a test keeps them so); the file stays the operator's reference, the
classes are what checks it. Cross-field rules sit in ``check()``.
"""
from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from conf.actors import check_actors
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
from messages.transport.tls import is_loopback

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


def _absolute_paths(paths: tuple[str, ...]) -> str | None:
    """Absolute host paths (or globs of them); "/" would allow the whole host, so it is refused."""
    wrong = [path for path in paths if not path.startswith("/") or path.rstrip("/") == ""]
    return f"must be absolute paths other than /, got {wrong[0]!r}" if wrong else None


def _functions(paths: tuple[str, ...]) -> str | None:
    """``package.module:function`` each (the listener imports them when it starts)."""
    wrong = [path for path in paths if not all(path.partition(":")[::2]) or path.count(":") != 1]
    return f"must be 'package.module:function' paths, got {wrong[0]!r}" if wrong else None


@dataclass(frozen=True)
class DeviceSection:
    uuid: str = setting("demo-device", rule=non_empty)
    thing: str = setting("demo-device", rule=non_empty)
    token: str = "demo-token"
    token_file: str = ""  # read at load (load_secrets) into token; refused if group- or world-readable


@dataclass(frozen=True)
class MqttSection:
    host: str = setting("127.0.0.1", rule=non_empty)
    port: int = setting(8883, rule=PORT)
    tls: bool = True
    ca_file: str = "var/pki/ca.crt"
    cert_file: str = "var/pki/demo-device.crt"
    key_file: str = "var/pki/demo-device.key"
    alpn: tuple[str, ...] = ()
    server_name: str = ""
    username: str = ""
    password_file: str = ""  # read at load (load_secrets); refused if group- or world-readable
    protocol: int = setting(5, rule=one_of(4, 5))
    keepalive: int = setting(30, rule=between(0, 65535))  # MQTT's two-byte keep-alive
    session_expiry: int = setting(604800, rule=between(0, 2**32 - 1))  # MQTT 5's four-byte interval
    reconnect_min: float = setting(0.5, rule=positive)
    reconnect_max: float = setting(60.0, rule=positive)

    def check(self) -> None:
        if self.reconnect_min > self.reconnect_max:
            raise ConfigError("reconnect_min must be positive and at most mqtt.reconnect_max")
        if not self.tls and not is_loopback(self.host):
            raise ConfigError(f"tls: the broker {self.host!r} is not loopback: plaintext MQTT is refused there")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("cert_file and mqtt.key_file go together (a client certificate and its key)")
        if self.password_file and not self.username:
            raise ConfigError("password_file needs mqtt.username")


@dataclass(frozen=True)
class CloudSection:
    url: str = setting("https://127.0.0.1:8080", rule=_url)
    timeout: float = setting(10.0, rule=positive)
    ca_file: str = "var/pki/ca.crt"  # "" = the system's trust store; verification is always on
    cert_file: str = "var/pki/demo-device.crt"
    key_file: str = "var/pki/demo-device.key"

    def check(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
            raise ConfigError(f"url: {self.url!r} is not loopback: the cloud API is reached over https:// only")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("cert_file and cloud.key_file go together (a client certificate and its key)")


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
    disk_reserve_mb: int = setting(16, rule=non_negative)  # a new target is not stored if it would eat into this


@dataclass(frozen=True)
class AgentSection:
    admin_port: int = setting(19500, rule=PORT)
    log_level: str = setting("INFO", rule=one_of(*LOG_LEVELS))
    stop_timeout: float = setting(10.0, rule=positive)
    log_format: str = setting("text", rule=one_of("text", "json"))


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
    allow_privileged_ports: bool = False
    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    devices: tuple[str, ...] = setting((), rule=_absolute_paths)
    cap_add: tuple[str, ...] = ()
    bind_roots: tuple[str, ...] = setting((), rule=_absolute_paths)
    security_opt: tuple[str, ...] = ()
    registries: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpdateSection:
    """How a target is applied as a release (actors.target.release): health-gated commit, rollback, locks."""
    settle_seconds: float = setting(10.0, rule=non_negative)
    timeout: float = setting(300.0, rule=positive)
    max_attempts: int = setting(1, rule=positive)
    lock_timeout: float = setting(3600.0, rule=non_negative)
    lock_dir: str = setting("var/locks", rule=non_empty)


@dataclass(frozen=True)
class ApiSection:
    """The local HTTP API (actors.api): a Unix socket, optionally a loopback port."""
    socket: str = setting("var/api.sock", rule=non_empty)
    group: str = ""  # "" = the agent's own group
    port: int = setting(0, rule=between(0, 65535))  # 0 = no TCP listener
    key_file: str = setting("var/api.key", rule=non_empty)

    def check(self) -> None:
        if len(os.fsencode(self.socket)) > 107:
            raise ConfigError(f"socket: {self.socket!r} is longer than a Unix socket path may be (107 bytes)")


SECTIONS = {"device": DeviceSection, "mqtt": MqttSection, "cloud": CloudSection, "shadow": ShadowSection,
            "store": StoreSection, "agent": AgentSection, "supervisor": SupervisorSection,
            "policy": PolicySection, "update": UpdateSection, "api": ApiSection}


# -- files named by the configuration -----------------------------------------------------------------------------

def load_secrets(config: dict[str, Any]) -> None:
    """Read ``device.token_file`` into ``device.token``, and ``mqtt.password_file`` into the table
    ``credentials`` (``mqtt_password``: no section of the file, so nothing can set it but the file), when set;
    a file that group or others may read is refused (a secret on a shared device is no secret)."""
    if config["device"]["token_file"]:
        config["device"]["token"] = read_secret(config["device"]["token_file"], "device.token_file")
    password_file = config["mqtt"]["password_file"]
    config["credentials"] = {"mqtt_password": read_secret(password_file, "mqtt.password_file") if password_file
                             else ""}


def read_secret(path: str, key: str) -> str:
    """The file's first line, stripped; ConfigError naming ``key`` when it is unreadable, too open or empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{key}: {path} is not a regular file")
        if mode & 0o077:
            raise ConfigError(f"{key}: {path} is readable by group or others (mode {stat.S_IMODE(mode):04o}): "
                              f"chmod 600 it")
        text = fh.read(4096).decode("utf-8", "replace").strip().splitlines()
    if not text or not text[0].strip():
        raise ConfigError(f"{key}: {path} is empty")
    return text[0].strip()


def check_link_files(config: dict[str, Any]) -> None:
    """Every certificate and key the enabled actors' links will open is readable: checked before the agent
    starts anything (a command that opens no link, ``run.py status``, does not need them)."""
    # An actor that opens a link uses its whole section; one naming a key (mqtt.port: the policy) opens none.
    used = {item for cls in check_actors(config).values() for item in cls.uses if "." not in item}
    mqtt, cloud = config["mqtt"], config["cloud"]
    named = [(f"mqtt.{key}", mqtt[key]) for key in ("ca_file", "cert_file", "key_file")] \
        if mqtt["tls"] and "mqtt" in used else []
    if "cloud" in used and cloud["url"].startswith("https://"):
        named += [(f"cloud.{key}", cloud[key]) for key in ("ca_file", "cert_file", "key_file")]
    for key, path in named:
        if path and not os.access(path, os.R_OK):
            problem = "no such file" if not os.path.exists(path) else "not readable"
            raise ConfigError(f"{key}: cannot read {path}: {problem}")
