"""TLS for both links (MQTT and the cloud API): one way to build a client context, and one way to say why a
server's certificate was refused.

Verification is always on: a CA file (or the system's store when none is named), the host name checked, TLS
1.2 at least. A client certificate, ALPN protocols (AWS IoT on port 443 wants ``x-amzn-mqtt-ca``) and a server
name other than the host connected to (SNI and the name checked) are optional.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import socket
import ssl

from cryptography import x509

PROBE_TIMEOUT = 3.0  # seconds for the second handshake that reads the refused certificate


@dataclasses.dataclass(frozen=True)
class TlsSettings:
    ca_file: str = ""  # "" = the system's trust store
    cert_file: str = ""  # "" = no client certificate
    key_file: str = ""
    alpn: tuple[str, ...] = ()
    server_name: str = ""  # "" = the host connected to

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate needs both cert_file and key_file")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: the one place plaintext may be used."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _NamedContext(ssl.SSLContext):
    """A context that presents (and checks) ``server_name`` whatever host it connects to: asyncio and
    http.client pass the host they dialled, and gmqtt offers no other way."""

    server_name: str | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name or server_hostname, session)

    def wrap_socket(self, sock: socket.socket, server_side: bool = False, do_handshake_on_connect: bool = True,
                    suppress_ragged_eofs: bool = True, server_hostname: str | bytes | None = None,
                    session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        return super().wrap_socket(sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                                   self.server_name or server_hostname, session)


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """A verifying client context; OSError or ssl.SSLError when a file is missing or unusable."""
    context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.ca_file:
        context.load_verify_locations(cafile=settings.ca_file)
    else:
        context.load_default_certs()
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    if settings.alpn:
        context.set_alpn_protocols(list(settings.alpn))
    context.server_name = settings.server_name or None
    return context


def describe_refusal(exc: ssl.SSLCertVerificationError, what: str, host: str, port: int,
                     server_name: str = "") -> str:
    """Why the server's certificate was refused, and which certificate: ``certificate verify failed: unable to
    get local issuer certificate for broker 127.0.0.1:8883 (subject CN=x, issuer CN=y)``. The certificate is
    read with a second handshake that verifies nothing and sends nothing else."""
    check = exc.verify_message or exc.reason or str(exc)
    text = f"certificate verify failed: {check} for {what} {host}:{port}"
    seen = peer_certificate(host, port, server_name)
    return f"{text} ({seen})" if seen else text


def peer_certificate(host: str, port: int, server_name: str = "") -> str | None:
    """``subject ..., issuer ...`` of the certificate the server presents, or None if it cannot be read."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to read what is presented; nothing is trusted or sent
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as raw, \
                context.wrap_socket(raw, server_hostname=server_name or host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    return f"subject {cert.subject.rfc4514_string()}, issuer {cert.issuer.rfc4514_string()}"
