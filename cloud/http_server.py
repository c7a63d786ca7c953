"""The HTTP server in front of :class:`cloud.http_api.CloudApi`: the standard library's ThreadingHTTPServer.

A reference cloud needs a few JSON endpoints, not a framework, and this adds no dependency to the
device's requirements. Each connection gets a thread; keep-alive is on; bodies need a Content-Length
and are refused unread (413) beyond ``http.max_body_bytes``; a client silent for ``http.client_timeout``
seconds is dropped. With ``http.cert_file`` and ``http.key_file`` it speaks only TLS; each handshake runs in
its connection's thread, under the same timeout, so a client that never finishes one holds nothing else up.
A client certificate is optional; one that is presented must come from ``http.ca_file``'s CA.
"""
from __future__ import annotations

import json
import logging
import socket
import ssl
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cloud.http_api import ApiError, ApiRequest, ApiResponse, CloudApi
from cloud.settings import TlsFiles

log = logging.getLogger("fleetlet.cloud.http")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the agent polls often
    server_version = "fleetlet-cloud"
    server: "ApiServer"

    def setup(self) -> None:
        # Slow or silent clients are dropped. What StreamRequestHandler does with its class-level ``timeout``,
        # done per connection: the timeout is this server's setting, not the class's.
        self.request.settimeout(self.server.api.settings.client_timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ApiError as exc:
            self.close_connection = True  # the unread body would be taken for the next request
            self._send(ApiResponse(exc.status, exc.body, exc.headers))
            return
        parts = urlsplit(self.path)
        request = ApiRequest(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                          {name.lower(): value for name, value in self.headers.items()}, body)
        self._send(self.server.api.handle(request))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "send the body with a Content-Length, not chunked")
        length = self.headers.get("Content-Length")
        if length is None:
            if self.command in ("POST", "PUT", "PATCH"):
                raise ApiError(411, "a Content-Length is needed")
            return b""
        if not (length.isascii() and length.isdigit()):  # isdigit alone takes "²", which int() refuses
            raise ApiError(400, "Content-Length is not a number")
        if len(length) > 18 or int(length) > self.server.api.settings.max_body_bytes:  # int() stops at 4,300 digits
            raise ApiError(413, f"the body exceeds {self.server.api.settings.max_body_bytes} bytes")
        return self.rfile.read(int(length))

    def _send(self, response: ApiResponse) -> None:
        payload = b"" if response.body is None else json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if response.body is not None:
            self.send_header("Content-Type", "application/json")
        if response.status != 304:
            self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # What the standard library refuses itself (a malformed request line, an unknown method...):
        # answered in JSON like everything else, instead of its HTML page.
        self.close_connection = True
        self._send(ApiResponse(code, {"error": message or HTTPStatus(code).phrase}))

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung client never holds up a stop

    def __init__(self, api: CloudApi) -> None:
        self.api = api
        if ":" in api.settings.http_host:
            self.address_family = socket.AF_INET6
        self.tls = None if api.settings.http_tls is None else server_context(api.settings.http_tls)
        super().__init__((api.settings.http_host, api.settings.http_port), _Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        connection, address = super().get_request()
        if self.tls is not None:  # the handshake happens in the connection's own thread (_Handler.setup)
            connection = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)  # a failed handshake, a reset


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2 at least; a client certificate is optional, and verified against ``ca_file`` when presented."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert_file, files.key_file)
    if files.ca_file:
        context.load_verify_locations(cafile=files.ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context
