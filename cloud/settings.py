"""The cloud's configuration, checked once at start into typed, frozen settings.

``conf.load("cloud", ...)`` has already refused unknown keys and wrong types; this adds the value rules
(ranges, name patterns, the store URL) so that a bad file stops the start with the key named.
"""
from __future__ import annotations

import dataclasses
import ipaddress

import conf
from cloud.db import StoreLocation, StoreUrlError, parse_store_url
from cloud.shadow_algebra import Limits
from messages.protocol.shadow_document import ShadowError
from messages.protocol.shadow_topics import validate_thing_name

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_TOKEN_LENGTH = 8


@dataclasses.dataclass(frozen=True)
class Seed:
    uuid: str
    thing: str
    token: str


@dataclasses.dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    keepalive: int
    session_expiry: int
    publish_window: int
    outbox_limit: int
    reconnect_delay: float
    poll_now: bool


@dataclasses.dataclass(frozen=True)
class CloudSettings:
    http_host: str
    http_port: int
    max_body_bytes: int
    client_timeout: float
    store: StoreLocation
    mqtt: MqttSettings
    admin_token: str
    limits: Limits
    max_queued_per_thing: int
    seed: Seed | None
    log_level: str

    @property
    def base_url(self) -> str:
        """The URL the operator commands use to reach this cloud."""
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "") else self.http_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.http_port}"


def load_settings(path: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> CloudSettings:
    """Read the cloud configuration (defaults, file, overrides) and check it; raises ``conf.ConfigError``."""
    return settings_from_config(conf.load("cloud", path, overrides))


def settings_from_config(config: dict) -> CloudSettings:
    http, mqtt, shadow, seed = config["http"], config["mqtt"], config["shadow"], config["seed"]
    admin_token = config["auth"]["admin_token"]
    _require(len(admin_token) >= MIN_TOKEN_LENGTH, f"auth.admin_token must have at least {MIN_TOKEN_LENGTH} characters")
    if not _is_loopback(http["host"]) and admin_token == conf.defaults("cloud")["auth"]["admin_token"]:
        raise conf.ConfigError(f"http.host {http['host']!r} is not loopback: set auth.admin_token to a secret first")
    _require(config["log"]["level"] in LOG_LEVELS, f"log.level must be one of {', '.join(LOG_LEVELS)}")
    try:
        store = parse_store_url(config["store"]["url"])
    except StoreUrlError as exc:
        raise conf.ConfigError(f"store.url: {exc}") from None
    return CloudSettings(
        http_host=http["host"],
        http_port=_port("http.port", http["port"]),
        max_body_bytes=_at_least("http.max_body_bytes", http["max_body_bytes"], 1024),
        client_timeout=_positive("http.client_timeout", http["client_timeout"]),
        store=store,
        mqtt=MqttSettings(
            host=_nonempty("mqtt.host", mqtt["host"]),
            port=_port("mqtt.port", mqtt["port"]),
            client_id=_nonempty("mqtt.client_id", mqtt["client_id"]),
            keepalive=_at_least("mqtt.keepalive", mqtt["keepalive"], 1),
            session_expiry=_at_least("mqtt.session_expiry", mqtt["session_expiry"], 0),
            publish_window=_at_least("mqtt.publish_window", mqtt["publish_window"], 1),
            outbox_limit=_at_least("mqtt.outbox_limit", mqtt["outbox_limit"], 1),
            reconnect_delay=_positive("mqtt.reconnect_delay", mqtt["reconnect_delay"]),
            poll_now=mqtt["poll_now"],
        ),
        admin_token=admin_token,
        limits=_limits(shadow),
        max_queued_per_thing=_at_least("shadow.max_queued_per_thing", shadow["max_queued_per_thing"], 1),
        seed=_seed(seed),
        log_level=config["log"]["level"],
    )


def _limits(shadow: dict) -> Limits:
    try:
        return Limits(max_state_bytes=shadow["max_state_bytes"], max_depth=shadow["max_depth"])
    except ValueError as exc:
        raise conf.ConfigError(f"shadow.{exc}") from None


def _seed(seed: dict) -> Seed | None:
    if seed["uuid"] == "":
        return None
    try:
        validate_thing_name(seed["uuid"])
        validate_thing_name(seed["thing"])
    except ShadowError:
        raise conf.ConfigError("seed.uuid and seed.thing must match [a-zA-Z0-9:_-]{1,128}") from None
    _require(len(seed["token"]) >= MIN_TOKEN_LENGTH, f"seed.token must have at least {MIN_TOKEN_LENGTH} characters")
    return Seed(seed["uuid"], seed["thing"], seed["token"])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise conf.ConfigError(message)


def _port(name: str, value: int) -> int:
    _require(1 <= value <= 65535, f"{name} must be in 1..65535, got {value}")
    return value


def _at_least(name: str, value: int, minimum: int) -> int:
    _require(value >= minimum, f"{name} must be at least {minimum}, got {value}")
    return value


def _positive(name: str, value: float) -> float:
    _require(value > 0, f"{name} must be positive, got {value}")
    return value


def _nonempty(name: str, value: str) -> str:
    _require(value != "", f"{name} must not be empty")
    return value
