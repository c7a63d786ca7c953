"""The cloud's configuration, checked once at start into typed, frozen settings.

Each section of ``conf/cloud.toml`` is declared below with its value rules (the mechanism of
:mod:`conf.schema`, the same as the agent's), so that a bad file stops the start with the key named.
"""
from __future__ import annotations

import dataclasses

import conf
from cloud.db import StoreLocation, StoreUrlError, parse_store_url
from cloud.shadow_algebra import MAX_STATE_BYTES_CEILING, Limits
from conf.schema import LOG_LEVELS, PORT, ConfigError, at_least, between, non_empty, one_of, positive, setting
from messages.protocol.shadow_document import ShadowError
from messages.protocol.shadow_topics import validate_thing_name
from messages.transport.tls import TlsSettings, is_loopback

MIN_TOKEN_LENGTH = 8


def _secret(value: str) -> str | None:
    return None if len(value) >= MIN_TOKEN_LENGTH else f"must have at least {MIN_TOKEN_LENGTH} characters"


def _store_url(value: str) -> str | None:
    try:
        parse_store_url(value)
    except StoreUrlError as exc:
        return f"is not a store URL: {exc}"
    return None


# -- the sections of conf/cloud.toml ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CloudHttpSection:
    host: str = "127.0.0.1"
    port: int = setting(8080, rule=PORT)
    max_body_bytes: int = setting(1048576, rule=at_least(1024))
    client_timeout: float = setting(10.0, rule=positive)
    cert_file: str = "var/pki/server.crt"  # with key_file: serve https; "" for both: plain http
    key_file: str = "var/pki/server.key"
    ca_file: str = "var/pki/ca.crt"  # what the operator commands verify the API with, and clients' certificates

    def check(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("cert_file and http.key_file go together (the API's certificate and its key)")


@dataclasses.dataclass(frozen=True)
class CloudStoreSection:
    url: str = setting("sqlite:///var/cloud.db", rule=_store_url)


@dataclasses.dataclass(frozen=True)
class MqttSettings:
    """[mqtt]: the shadow service's broker connection, as the cloud's MQTT link takes it."""
    host: str = setting("127.0.0.1", rule=non_empty)
    port: int = setting(8883, rule=PORT)
    tls: bool = True
    ca_file: str = "var/pki/ca.crt"
    cert_file: str = "var/pki/cloud.crt"
    key_file: str = "var/pki/cloud.key"
    client_id: str = setting("fleetlet-cloud", rule=non_empty)
    keepalive: int = setting(30, rule=between(1, 65535))
    session_expiry: int = setting(3600, rule=between(0, 2**32 - 1))
    publish_window: int = setting(16, rule=at_least(1))
    outbox_limit: int = setting(10000, rule=at_least(1))
    reconnect_delay: float = setting(1.0, rule=positive)
    poll_now: bool = True

    def check(self) -> None:
        if not self.tls and not is_loopback(self.host):
            raise ConfigError(f"tls: the broker {self.host!r} is not loopback: plaintext MQTT is refused there")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("cert_file and mqtt.key_file go together (a client certificate and its key)")


@dataclasses.dataclass(frozen=True)
class CloudAuthSection:
    admin_token: str = setting("fleetlet-admin-token", rule=_secret)


@dataclasses.dataclass(frozen=True)
class CloudShadowSection:
    max_state_bytes: int = setting(8192, rule=between(1, MAX_STATE_BYTES_CEILING))
    max_depth: int = setting(6, rule=at_least(1))
    max_queued_per_thing: int = setting(10, rule=at_least(1))


@dataclasses.dataclass(frozen=True)
class Seed:
    """[seed]: a device registered at every start."""
    uuid: str = "demo-device"  # "" registers no device
    thing: str = "demo-device"
    token: str = "demo-token"

    def check(self) -> None:
        if self.uuid == "":
            return
        try:
            validate_thing_name(self.uuid)
            validate_thing_name(self.thing)
        except ShadowError:
            raise ConfigError("uuid and seed.thing must match [a-zA-Z0-9:_-]{1,128}") from None
        if _secret(self.token):
            raise ConfigError(f"token {_secret(self.token)}")


@dataclasses.dataclass(frozen=True)
class CloudLogSection:
    level: str = setting("INFO", rule=one_of(*LOG_LEVELS))


SECTIONS = {"http": CloudHttpSection, "store": CloudStoreSection, "mqtt": MqttSettings, "auth": CloudAuthSection,
            "shadow": CloudShadowSection, "seed": Seed, "log": CloudLogSection}


# -- what the cloud runs with -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CloudSettings:
    http_host: str
    http_port: int
    http_tls: TlsFiles | None
    max_body_bytes: int
    client_timeout: float
    store: StoreLocation
    mqtt: MqttSettings
    admin_token: str
    limits: Limits
    max_queued_per_thing: int
    seed: Seed | None
    log_level: str
    notes: tuple[str, ...] = ()  # what start-up should tell the operator

    @property
    def base_url(self) -> str:
        """The URL the operator commands use to reach this cloud."""
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "") else self.http_host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.http_tls else 'http'}://{host}:{self.http_port}"

    def operator_tls(self) -> TlsSettings:
        """How the operator commands verify the API: ``http.ca_file`` (the system's store when empty)."""
        return TlsSettings(self.http_tls.ca_file if self.http_tls else "")


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """The API's certificate and key, and the CA its clients' optional certificates must come from."""
    cert_file: str
    key_file: str
    ca_file: str


def load_cloud_settings(path: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> CloudSettings:
    """Read the cloud configuration (defaults, file, overrides) and check it; raises ``conf.ConfigError``."""
    return _from_sections(conf.load_sections("cloud", path, overrides, SECTIONS))


def _from_sections(sections: dict) -> CloudSettings:
    """The checked sections as the cloud's settings, and the one rule across them (a public API needs a secret)."""
    http, mqtt, auth, shadow, seed = (sections[name] for name in ("http", "mqtt", "auth", "shadow", "seed"))
    if not is_loopback(http.host) and auth.admin_token == CloudAuthSection().admin_token:
        raise ConfigError(f"http.host {http.host!r} is not loopback: set auth.admin_token to a secret first")
    notes = []
    if seed.uuid != "" and not is_loopback(http.host) and seed.token == Seed().token:
        # The default token is public (it is in this repository): off loopback it would let anyone be the device.
        notes.append(f"the seed device {seed.uuid!r} is not registered: its token is the public default and "
                     f"http.host {http.host!r} is not loopback")
        seed = dataclasses.replace(seed, uuid="")
    return CloudSettings(
        http_host=http.host,
        http_port=http.port,
        http_tls=TlsFiles(http.cert_file, http.key_file, http.ca_file) if http.cert_file else None,
        max_body_bytes=http.max_body_bytes,
        client_timeout=http.client_timeout,
        store=parse_store_url(sections["store"].url),
        mqtt=mqtt,
        admin_token=auth.admin_token,
        limits=Limits(max_state_bytes=shadow.max_state_bytes, max_depth=shadow.max_depth),
        max_queued_per_thing=shadow.max_queued_per_thing,
        seed=None if seed.uuid == "" else seed,
        log_level=sections["log"].level,
        notes=tuple(notes),
    )
