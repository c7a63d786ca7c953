"""The one HTTP client of the cloud API (http.client): the agent's poller, reporter and EMQX read, and the
cloud's operator commands and tests.

Bearer token, a timeout, JSON bodies, and one error type, :class:`CloudError`: raised when no answer came
(refused, timed out, dropped, oversized), and for an answer whose status the caller did not list in ``ok``.
Without ``ok`` every status is an answer, for callers (operators, tests) that look at it themselves.
Redirects are not followed: a 3xx is an answer like any other, so the token never travels to another host
(urllib would forward ``Authorization`` to wherever a redirect points). The timeout bounds the whole request:
a socket timeout alone bounds each operation, so a server trickling bytes could hold a request far past it;
a watchdog shuts the socket down at the deadline. https:// always verifies the server's certificate
(:mod:`messages.transport.tls`: a CA file or the system's store, optionally a client certificate); a refused
certificate is named in the error, with the check that failed. The API's paths are written here once, in the
methods below.
"""
from __future__ import annotations

import dataclasses
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from messages.protocol import api
from messages.protocol import json as strict_json
from messages.protocol.json import JSONObject
from messages.protocol.shadow_topics import CLASSIC_SHADOW
from messages.transport import usage
from messages.transport.tls import TlsSettings, client_context, describe_refusal

MAX_RESPONSE_BYTES = 1024 * 1024  # the API's documents are kilobytes; more is a broken or hostile server


class CloudError(Exception):
    """The cloud could not be reached or answered with something unusable; ``status`` when it answered."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> object:
        """The body decoded strictly (messages.protocol.json: no duplicate keys, 64-bit integers, finite
        numbers, no lone surrogates, bounded depth); CloudError when it is not such JSON (an empty body too)."""
        try:
            return strict_json.decode(self.body)
        except strict_json.JSONRefused as exc:
            raise CloudError(f"the cloud answered {self.status} with a body that is not JSON: {exc}",
                             self.status) from None


class CloudClient:
    """Calls ``base_url`` (http or https, with an optional path prefix), with ``Authorization: Bearer <token>``
    when a token is given."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0,
                 max_response_bytes: int = MAX_RESPONSE_BYTES, tls: TlsSettings | None = None):
        parts = urlsplit(base_url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise CloudError(f"{base_url!r}: expected http://host:port or https://host:port")
        try:
            parts.port  # noqa: B018 - a malformed port raises here, not at the first request
        except ValueError as exc:
            raise CloudError(f"{base_url!r}: {exc}") from None
        self.base_url = base_url.rstrip("/")
        self._parts = parts
        self._host = host
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._tls = tls or TlsSettings()
        self._context: ssl.SSLContext | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "CloudClient":
        """The agent's client: ``cloud.url``, ``cloud.timeout``, the device's token and ``cloud``'s TLS files."""
        cloud = config["cloud"]
        return cls(cloud["url"], config["device"]["token"], cloud["timeout"],
                   tls=TlsSettings(cloud["ca_file"], cloud["cert_file"], cloud["key_file"]))

    def _https_context(self) -> ssl.SSLContext:
        """Built at the first https request (a client that is never used needs no files), then kept."""
        if self._context is None:
            try:
                self._context = client_context(self._tls)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise CloudError(f"{self.base_url}: cannot use the TLS files: {exc}") from None
        return self._context

    def request(self, method: str, path: str, body: bytes | JSONObject | list[object] | None = None,
                headers: dict[str, str] | None = None, ok: tuple[int, ...] | None = None) -> Response:
        """Send one request; a dict or list ``body`` is sent as JSON. Statuses outside ``ok`` (when given) raise
        CloudError carrying the status."""
        sent = {"Accept": "application/json", **(headers or {})}
        if self._token is not None:
            sent.setdefault("Authorization", f"Bearer {self._token}")
        if isinstance(body, (dict, list)):
            try:  # what the cloud's decoder refuses (2^64, 1e999, a lone surrogate) is never sent
                body = strict_json.encode(body)
            except strict_json.JSONRefused as exc:
                raise CloudError(f"{method} {path}: the request body is not JSON the cloud accepts: {exc}") from None
            sent.setdefault("Content-Type", "application/json")
        if body is not None:
            sent["Content-Length"] = str(len(body))
        connection: http.client.HTTPConnection
        if self._parts.scheme == "https":
            connection = http.client.HTTPSConnection(self._host, self._parts.port, timeout=self._timeout,
                                                     context=self._https_context())
        else:
            connection = http.client.HTTPConnection(self._host, self._parts.port, timeout=self._timeout)
        started, watchdog = time.monotonic(), None
        try:
            connection.connect()  # bounded by the socket timeout; the watchdog takes the rest of the time
            watchdog = _Watchdog(connection, max(0.0, self._timeout - (time.monotonic() - started)))
            connection.request(method, self._prefix + path, body=body, headers=sent)
            reply = connection.getresponse()
            usage.count("http", "sent", _head_size(f"{method} {self._prefix}{path} HTTP/1.1", sent.items())
                        + len(body or b""))
            response = Response(reply.status, {name.lower(): value for name, value in reply.getheaders()},
                                reply.read(self._max_response_bytes + 1))
            usage.count("http", "received", _head_size(f"HTTP/1.1 {reply.status} {reply.reason}",
                                                       reply.getheaders()) + len(response.body))
            missing = reply.length  # what a Content-Length promised and a bounded read did not get
        except ssl.SSLCertVerificationError as exc:
            port = self._parts.port or 443
            raise CloudError(f"{method} {self.base_url}{path}: "
                             f"{describe_refusal(exc, 'cloud API', self._host, port, self._tls.server_name)}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            timed_out = watchdog is not None and watchdog.fired
            reason = f"no complete answer within {self._timeout} s" if timed_out else exc or type(exc).__name__
            raise CloudError(f"{method} {self.base_url}{path}: {reason}") from exc
        finally:
            if watchdog is not None:
                watchdog.cancel()
            connection.close()
        if watchdog.fired:  # the shutdown may also end a body read early without an error: never trust it
            raise CloudError(f"{method} {self.base_url}{path}: no complete answer within {self._timeout} s")
        if len(response.body) > self._max_response_bytes:
            raise CloudError(f"{method} {path}: response larger than {self._max_response_bytes} bytes",
                             response.status)
        if missing:
            raise CloudError(f"{method} {path}: the answer ended {missing} bytes before its Content-Length",
                             response.status)
        if ok is not None and response.status not in ok:
            raise CloudError(f"{method} {path}: HTTP {response.status}: {response.body[:300]!r}", response.status)
        return response

    # --- devices -----------------------------------------------------------------------------------------

    def get_target(self, uuid: str, etag: str | None = None, ok: tuple[int, ...] | None = None) -> Response:
        headers = {api.IF_NONE_MATCH: etag} if etag else {}
        return self.request("GET", api.target_state_path(uuid), headers=headers, ok=ok)

    def set_target(self, uuid: str, document: JSONObject | bytes) -> Response:
        return self.request("POST", api.target_state_path(uuid), document)

    def report_state(self, reports: JSONObject | bytes, ok: tuple[int, ...] | None = None) -> Response:
        return self.request("PATCH", api.DEVICE_STATE_PATH, reports, ok=ok)

    def device_state(self, uuid: str) -> Response:
        return self.request("GET", api.device_state_path(uuid))

    def register_device(self, uuid: str, thing: str, token: str) -> Response:
        return self.request("PUT", api.device_path(uuid), {"thing": thing, "token": token})

    def health(self) -> Response:
        return self.request("GET", "/healthz")

    # --- shadows (AWS HTTPS, and EMQX's view) -----------------------------------------------------------------

    def get_shadow(self, thing: str, name: str = CLASSIC_SHADOW) -> Response:
        return self.request("GET", api.shadow_path(thing, name))

    def update_shadow(self, thing: str, request: JSONObject | bytes, name: str = CLASSIC_SHADOW) -> Response:
        return self.request("POST", api.shadow_path(thing, name), request)

    def delete_shadow(self, thing: str, name: str = CLASSIC_SHADOW) -> Response:
        return self.request("DELETE", api.shadow_path(thing, name))

    def emqx_shadow(self, thing: str, ok: tuple[int, ...] | None = None) -> Response:
        return self.request("GET", api.emqx_shadow_path(thing), ok=ok)


class _Watchdog:
    """Shuts a connection's socket down once ``seconds`` have passed, which wakes a blocked read at once."""

    def __init__(self, connection: http.client.HTTPConnection, seconds: float):
        self.fired = False
        self._connection = connection
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed: the request ended as the deadline came
                pass

    def cancel(self) -> None:
        self._timer.cancel()


def _head_size(first_line: str, fields: Iterable[tuple[str, str]]) -> int:
    """The bytes of a message head (TLS framing aside): its first line and fields as written on the wire."""
    return len(first_line) + 2 + sum(len(name) + len(value) + 4 for name, value in fields) + 2
