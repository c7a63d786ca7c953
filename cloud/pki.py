"""Operator tooling: a development PKI and the broker configuration it implies (``run.py pki ...``).

One directory holds everything: ``ca.crt``/``ca.key`` (the development CA), ``server.crt``/``.key`` (the
broker's and the cloud API's certificate, for 127.0.0.1, ::1 and localhost), ``cloud.crt``/``.key`` (the
cloud's client identity), one ``UUID.crt``/``UUID.key`` per device, and ``mosquitto.conf``/``acl``.

An identity is a certificate's subject: CN is what Mosquitto takes as username and client id
(``use_identity_as_username``, ``use_username_as_clientid``), OU its role, ``cloud`` or ``device``; a device
certificate carries its uuid as the SAN URI ``urn:fleetlet:device:UUID``. The ACL is generated from the
certificates in the directory, so what a test runs is what an operator deploys. Keys are EC P-256: as strong
as RSA-3072 for TLS and a thousand times faster to generate, which keeps a per-test-session PKI cheap.
Private keys are written 0600, atomically.
"""
from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import pathlib
import re
import secrets
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from messages.protocol.shadow_document import ShadowError
from messages.protocol.shadow_topics import validate_thing_name
from messages.transport.tls import is_loopback

CLOUD_ROLE, DEVICE_ROLE = "cloud", "device"
CLOUD_IDENTITY = "fleetlet-cloud"  # the cloud's CN, hence its MQTT username and client id
DEVICE_URI = "urn:fleetlet:device:"
RESERVED = frozenset({"ca", "server", "cloud"})  # file stems a device uuid cannot take
VALID_DAYS = 825  # the longest leaf lifetime TLS clients still accept
CA_DAYS = 3650
_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")  # a uuid or an identity: safe in a file name and an ACL line


class PkiError(Exception):
    """The PKI directory is unusable for this (no CA yet, a CA already); the text says which and why."""


class PkiArgumentError(PkiError):
    """A name, a uuid or an address that the PKI cannot take."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """A client certificate found in the directory."""
    name: str  # CN: the MQTT username
    role: str  # CLOUD_ROLE or DEVICE_ROLE
    uuid: str | None  # devices only


# -- paths -------------------------------------------------------------------------------------------------------

def device_paths(directory: str | os.PathLike[str], uuid: str) -> tuple[pathlib.Path, pathlib.Path]:
    """Where ``uuid``'s certificate and key are (``DIR/UUID.crt``, ``DIR/UUID.key``)."""
    check_name(uuid, "device uuid")
    if uuid in RESERVED:
        raise PkiArgumentError(f"device uuid {uuid!r} is reserved for the PKI's own files")
    base = pathlib.Path(directory)
    return base / f"{uuid}.crt", base / f"{uuid}.key"


def check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise PkiArgumentError(f"{what} must match [a-zA-Z0-9:_-]{{1,128}}, got {value!r}")
    return value


# -- issuing -------------------------------------------------------------------------------------------------------

def init(directory: str | os.PathLike[str], force: bool = False) -> pathlib.Path:
    """A new CA, the server certificate and the cloud identity in ``directory``; refuses to replace an existing CA
    (every certificate it signed would stop working) unless ``force``."""
    base = pathlib.Path(directory)
    if (base / "ca.key").exists() and not force:
        raise PkiError(f"{base / 'ca.key'} exists: a new CA invalidates every certificate issued; pass --force")
    base.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    # A name of its own: two development CAs of one name make a verifier pick the wrong one and report a
    # "self-signed certificate in certificate chain" instead of the unknown issuer it is.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Fleetlet development CA {secrets.token_hex(4)}")])
    now = _now()
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
          .sign(key, hashes.SHA256()))
    _write_key(base / "ca.key", key)
    _write(base / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1")),
            x509.DNSName("localhost")]
    _issue(base, "server", "localhost", "server", sans, ExtendedKeyUsageOID.SERVER_AUTH)
    issue_service(base, "cloud", CLOUD_IDENTITY)
    return base


def ensure(directory: str | os.PathLike[str], devices: Iterable[tuple[str, str]] = ()) -> pathlib.Path:
    """What a development stack needs, made where missing and kept where present (safe to run again): the CA,
    the server certificate and the cloud identity, and a certificate per ``(uuid, thing)``."""
    base = pathlib.Path(directory)
    if not (base / "ca.key").exists():
        init(base)
    for uuid, thing in devices:
        cert, _ = device_paths(base, uuid)
        current = read_identity(cert.read_bytes()) if cert.exists() else None
        if current != Identity(thing, DEVICE_ROLE, uuid):
            issue_device(base, uuid, thing)
    return base


def issue_device(directory: str | os.PathLike[str], uuid: str, thing: str | None = None) -> pathlib.Path:
    """``DIR/UUID.crt`` (CN = the thing name, ``uuid`` by default) and ``DIR/UUID.key``; returns the certificate."""
    device_paths(directory, uuid)  # checks the uuid first
    thing = uuid if thing is None else thing
    try:
        validate_thing_name(thing)
    except ShadowError:
        raise PkiArgumentError(f"thing name must match [a-zA-Z0-9:_-]{{1,128}}, got {thing!r}") from None
    return _issue(pathlib.Path(directory), uuid, thing, DEVICE_ROLE,
                  [x509.UniformResourceIdentifier(DEVICE_URI + uuid)], ExtendedKeyUsageOID.CLIENT_AUTH)


def issue_service(directory: str | os.PathLike[str], stem: str, name: str) -> pathlib.Path:
    """An identity that may serve every thing (the cloud's role): ``DIR/STEM.crt`` with CN ``name``."""
    check_name(stem, "file name")
    check_name(name, "identity")
    return _issue(pathlib.Path(directory), stem, name, CLOUD_ROLE, [], ExtendedKeyUsageOID.CLIENT_AUTH)


def _issue(base: pathlib.Path, stem: str, common_name: str, role: str, sans: list[x509.GeneralName],
           usage: x509.ObjectIdentifier) -> pathlib.Path:
    ca_cert, ca_key = _load_ca(base)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(base / f"{stem}.key", key)
    _write(base / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM))
    return base / f"{stem}.crt"


def _load_ca(base: pathlib.Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((base / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((base / "ca.key").read_bytes(), password=None)
    except OSError as exc:
        raise PkiError(f"no CA in {base} ({exc.strerror}): run `run.py pki init {base}` first") from None
    except ValueError as exc:
        raise PkiError(f"the CA in {base} is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{base / 'ca.key'} is not an EC key")
    return cert, key


# -- reading what was issued ---------------------------------------------------------------------------------------

def identities(directory: str | os.PathLike[str]) -> list[Identity]:
    """The client identities issued in ``directory`` (signed by its CA), sorted by name."""
    base = pathlib.Path(directory)
    found = []
    for path in sorted(base.glob("*.crt")):
        if path.stem in ("ca", "server"):
            continue
        identity = read_identity(path.read_bytes())
        if identity is not None:
            found.append(identity)
    return sorted(found, key=lambda identity: identity.name)


def read_identity(pem: bytes) -> Identity | None:
    """The identity a certificate carries, or None for one that is not a Fleetlet client certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    roles = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(names) != 1 or len(roles) != 1 or roles[0].value not in (CLOUD_ROLE, DEVICE_ROLE):
        return None
    name, role = str(names[0].value), str(roles[0].value)
    if not _NAME.fullmatch(name):
        return None
    uuid = None
    if role == DEVICE_ROLE:
        try:
            uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
                .get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        uuids = [uri[len(DEVICE_URI):] for uri in uris if uri.startswith(DEVICE_URI)]
        if len(uuids) != 1 or not _NAME.fullmatch(uuids[0]):
            return None
        uuid = uuids[0]
    return Identity(name, role, uuid)


# -- the broker ------------------------------------------------------------------------------------------------------

def acl_text(issued: Iterable[Identity]) -> str:
    """Mosquitto's ACL: every device its own shadow topics (``%u`` = its CN = its thing name) and, read-only, its
    poll-now topic; the cloud's identities every thing's. Nothing else: anonymous clients are refused anyway."""
    lines = ["# Generated by `run.py pki broker-config` from the certificates beside it; do not edit.",
             "# A device (username = its certificate's CN = its thing name) touches only its own topics.",
             "pattern readwrite $aws/things/%u/shadow/#",
             "pattern readwrite $emqx/things/%u/shadow/#",
             "pattern read fleetlet/devices/%u/#", ""]
    for identity in issued:
        if identity.role == CLOUD_ROLE:
            lines += [f"user {identity.name}", "topic readwrite $aws/things/+/shadow/#",
                      "topic readwrite $emqx/things/+/shadow/#", "topic readwrite fleetlet/devices/+/#", ""]
        elif identity.uuid is not None and identity.uuid != identity.name:
            lines += [f"user {identity.name}", f"topic read fleetlet/devices/{identity.uuid}/#", ""]
    return "\n".join(lines)


_BROKER_HEADER = ["# Generated by `run.py pki broker-config`; do not edit.",
                  "per_listener_settings true", "persistence false", "max_queued_messages 10000",
                  "max_inflight_messages 20",
                  # Nagle off, as production brokers run: each small answer would wait ~40 ms for the peer's ACK.
                  "set_tcp_nodelay true"]


def mosquitto_conf_text(directory: pathlib.Path, port: int, host: str = "127.0.0.1",
                        plain_port: int | None = None, acl: pathlib.Path | None = None, user: str | None = None) -> str:
    """A TLS listener requiring a client certificate from the directory's CA, with the ACL; ``plain_port``, on
    loopback only, an anonymous plaintext listener beside it (see :func:`plaintext_conf_text`). ``user``: whom a
    broker started as root runs as (Mosquitto's default, ``mosquitto``, cannot read a key that is 0600 another's)."""
    lines = [*_BROKER_HEADER, *([f"user {check_name(user, 'user')}"] if user else []), "",
             f"listener {port} {host}", f"cafile {directory / 'ca.crt'}", f"certfile {directory / 'server.crt'}",
             f"keyfile {directory / 'server.key'}", "require_certificate true", "use_identity_as_username true",
             # One certificate, one session: a client id cannot take over another device's session.
             "use_username_as_clientid true", "allow_anonymous false", f"acl_file {acl or directory / 'acl'}"]
    if plain_port is not None:
        lines += _plain_listener(plain_port, host)
    return "\n".join(lines) + "\n"


def plaintext_conf_text(port: int, host: str = "127.0.0.1") -> str:
    """Only an anonymous plaintext listener, on loopback only: whoever reaches loopback is trusted there, which is
    what plaintext means (development, and the benchmark measuring what TLS costs)."""
    return "\n".join([*_BROKER_HEADER, *_plain_listener(port, host)]) + "\n"


def _plain_listener(port: int, host: str) -> list[str]:
    if not is_loopback(host):
        raise PkiArgumentError(f"a plaintext listener is only for loopback, not {host!r}")
    return ["", f"listener {port} {host}", "allow_anonymous true"]


def broker_config(directory: str | os.PathLike[str], port: int, host: str = "127.0.0.1",
                  plain_port: int | None = None, into: str | os.PathLike[str] | None = None,
                  user: str | None = None) -> pathlib.Path:
    """Write ``acl`` and ``mosquitto.conf`` from what ``directory`` holds, into ``directory`` or ``into`` (a broker
    of its own beside a shared PKI, as each test has); returns the configuration's path."""
    base = pathlib.Path(directory).resolve()
    for needed in ("ca.crt", "server.crt", "server.key"):
        if not (base / needed).is_file():
            raise PkiError(f"{base / needed} is missing: run `run.py pki init {base}` first")
    out = base if into is None else pathlib.Path(into).resolve()
    _write(out / "acl", acl_text(identities(base)).encode())
    path = out / "mosquitto.conf"
    _write(path, mosquitto_conf_text(base, port, host, plain_port, acl=out / "acl", user=user).encode())
    return path


# -- files -------------------------------------------------------------------------------------------------------

def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write_key(path: pathlib.Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), mode=0o600)


def _write(path: pathlib.Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically, created with ``mode`` (never readable by others first and narrowed after)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
