"""The one client context (messages.transport.tls): verification always on, the name presented and checked,
ALPN offered, against a TLS server on loopback with the session PKI's server certificate."""
from __future__ import annotations

import socket
import ssl
import threading

import pytest

from messages.transport.tls import TlsSettings, client_context, is_loopback
from tests.support.pki import session_pki


class Server:
    """Accepts one TLS connection and records the name the client presented (SNI) and the ALPN protocol chosen."""

    def __init__(self):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*session_pki().files("server"))
        self.context.set_alpn_protocols(["x-amzn-mqtt-ca"])
        self.context.sni_callback = lambda sock, name, context: setattr(self, "sni", name)
        self.sni, self.alpn = None, None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        connection, _ = self.listener.accept()
        try:
            with self.context.wrap_socket(connection, server_side=True) as tls:
                self.alpn = tls.selected_alpn_protocol()
        except (ssl.SSLError, OSError):
            pass

    def close(self):
        self.thread.join(5)
        self.listener.close()


def connect(settings: TlsSettings, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return client_context(settings).wrap_socket(raw, server_hostname="127.0.0.1")


def test_the_server_name_is_presented_and_checked_and_alpn_is_offered():
    server = Server()
    try:
        with connect(TlsSettings(session_pki().ca, alpn=("x-amzn-mqtt-ca",), server_name="localhost"), server.port):
            pass
    finally:
        server.close()
    assert (server.sni, server.alpn) == ("localhost", "x-amzn-mqtt-ca")


def test_a_name_the_certificate_does_not_carry_is_refused():
    server = Server()
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            connect(TlsSettings(session_pki().ca, server_name="broker.example.com"), server.port)
    finally:
        server.close()


def test_verification_cannot_be_switched_off_and_a_client_certificate_needs_its_key():
    context = client_context(TlsSettings(session_pki().ca))
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        TlsSettings(session_pki().ca, cert_file="x.crt")


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("10.0.0.1", False),
                                                ("example.com", False), ("0.0.0.0", False), ("", False)])
def test_loopback_is_this_machine_only(host, loopback):
    assert is_loopback(host) is loopback
