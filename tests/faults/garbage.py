"""Hostile input for the fault suite: garbage HTTP answers (served by ``Front``) and hostile MQTT payloads.

``Front`` stands between the agent and the cloud on loopback: it relays each connection to the cloud, or,
for the methods a scenario names, reads the request and answers it with the next kind of garbage in
``GARBAGE`` (a bad status line, a truncated body, a trickle, a huge header, a redirect elsewhere, JSON with
hostile values...), recording how long each answer held the connection.
"""
from __future__ import annotations

import itertools
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cloud.loopback import LOOPBACK
from tests.support.sockets import pump

Send = Callable[[socket.socket, float], None]  # (connection, most seconds to hold it)


def _raw(data: bytes) -> Send:
    return lambda sock, hold: sock.sendall(data)


def _answer(status: str, body: bytes, headers: str = "", content_type: str = "application/json") -> Send:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{headers}"
            "Connection: close\r\n\r\n")
    return _raw(head.encode("latin-1") + body)


def _json(value: str, status: str = "200 OK", headers: str = 'ETag: "g1"\r\n') -> Send:
    return _answer(status, value.encode("utf-8", "surrogatepass"), headers)


def _hang_after(data: bytes) -> Send:
    """Send ``data``, then send nothing more until the client gives up (or ``hold`` passes)."""
    def send(sock: socket.socket, hold: float) -> None:
        sock.sendall(data)
        _wait_closed(sock, hold)
    return send


def _trickle(head: bytes, body: bytes) -> Send:
    """Headers at once (or not), then one byte every 0.2 s: each read succeeds, the whole never comes."""
    def send(sock: socket.socket, hold: float) -> None:
        sock.sendall(head)
        deadline = time.monotonic() + hold
        for byte in itertools.cycle(body):
            if time.monotonic() > deadline:
                return
            sock.sendall(bytes([byte]))
            time.sleep(0.2)
    return send


def _reset_after(data: bytes) -> Send:
    def send(sock: socket.socket, hold: float) -> None:
        sock.sendall(data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    return send


def _wait_closed(sock: socket.socket, hold: float) -> None:
    sock.settimeout(hold)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


_TARGET_BAD = '{"apps": {"1": {"services": 5}}}'  # a plausible body; a valid target would not be garbage
_DEEP = "[" * 100_000 + "]" * 100_000
GARBAGE: dict[str, Send] = {
    "close-at-once": _raw(b""),
    "not-http": _raw(b"garbage\r\n\r\n"),
    "status-not-numeric": _raw(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"),
    "status-999": _answer("999 Weird", b"{}"),
    "status-0": _answer("0 Zero", b"{}"),
    "http-9.9": _raw(b"HTTP/9.9 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
    "status-line-only": _raw(b"HTTP/1.1 200 OK\r\n"),
    "nul-in-status": _raw(b"HTTP/1.1 2\x0000 OK\r\nContent-Length: 2\r\n\r\n{}"),
    "bare-lf-headers": _raw(b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}"),
    "truncated-body": _raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nETag: \"t\"\r\n\r\n{\"apps\": {"),
    "length-then-hang": _hang_after(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"apps\""),
    "headers-then-hang": _hang_after(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"),
    "nothing-then-hang": _hang_after(b""),
    "negative-length": _raw(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}"),
    "length-not-numeric": _raw(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}"),
    "length-twice": _raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}"),
    "length-huge": _raw(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n{}"),
    "chunk-size-bad": _raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    "chunk-truncated": _raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"a"),
    "trickle-body": _trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nETag: \"t\"\r\n\r\n", b' {"apps":'),
    "trickle-headers": _trickle(b"", b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000),
    "huge-header": _raw(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 200_000 + b"\r\nContent-Length: 2\r\n\r\n{}"),
    "many-headers": _raw(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(500))
                         + b"Content-Length: 2\r\n\r\n{}"),
    "redirect-elsewhere": _answer("301 Moved", b"", "Location: http://127.0.0.2:9/steal\r\n"),
    "redirect-loop": _answer("307 Again", b"", "Location: /api/v1/device/x/target-state\r\n"),
    "continue-then-nothing": _raw(b"HTTP/1.1 100 Continue\r\n\r\n"),
    "continue-then-garbage": _raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2xx\r\n\r\n"),
    "reset-mid-headers": _reset_after(b"HTTP/1.1 200 OK\r\nContent-Le"),
    "http-1.0-no-length": _raw(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"apps\": {\"1\""),
    "gzip-garbage": _answer("200 OK", b"\x1f\x8b\x08\x00garbage", "Content-Encoding: gzip\r\nETag: \"z\"\r\n"),
    "etag-binary": _answer("200 OK", _TARGET_BAD.encode(), "ETag: \"\xff\xfe\x01\"\r\n"),
    "etag-huge": _answer("200 OK", _TARGET_BAD.encode(), "ETag: \"" + "e" * 60_000 + "\"\r\n"),
    "not-json": _answer("200 OK", b"hello", 'ETag: "n"\r\n', "text/html"),
    "invalid-utf8": _answer("200 OK", b'{"apps": {"\xff\xfe": {}}}', 'ETag: "u"\r\n'),
    "utf16-json": _answer("200 OK", _TARGET_BAD.encode("utf-16"), 'ETag: "u16"\r\n'),
    "bom-json": _answer("200 OK", b"\xef\xbb\xbf" + _TARGET_BAD.encode(), 'ETag: "bom"\r\n'),
    "json-null": _json("null"),
    "json-string": _json('"apps"'),
    "json-array": _json("[1, 2, 3]"),
    "json-2^64": _json('{"apps": {"1": {"appName": 18446744073709551616, "services": []}}, "v": 18446744073709551616}'),
    "json-1e999": _json('{"apps": {}, "x": 1e999, "y": -1e999}'),
    "json-nan": _json('{"apps": {}, "x": NaN}'),
    "json-lone-surrogate": _json('{"apps": {"\\ud800": {"appName": "\\udfff", "services": []}}}'),
    "json-deep": _json(_DEEP),
    "json-duplicate-keys": _json('{"apps": {}, "apps": {"1": {}}}'),
    "json-wrong-types": _json('{"apps": [{"services": "web"}], "state": 5}'),
    "json-4301-digit-port": _json('{"apps": {"1": {"appName": "a", "services": [{"serviceName": "web", "config": '
                                  '{"image": "x", "ports": ["' + "9" * 4301 + ':80"]}}]}}}'),
    "json-huge-body": _answer("200 OK", b'{"apps": {}, "pad": "' + b"p" * 20_000_000 + b'"}', 'ETag: "h"\r\n'),
    "304-with-body": _answer("304 Not Modified", b"garbage body", 'ETag: "g"\r\n'),
    "204-for-anything": _answer("204 No Content", b""),
    "500-html": _answer("500 Internal Server Error", b"<html>oops</html>", "", "text/html"),
    "503-retry-after-huge": _answer("503 Unavailable", b"", "Retry-After: 99999999999999999999\r\n"),
    "429-retry-after-negative": _answer("429 Too Many", b"", "Retry-After: -1\r\n"),
    "401": _answer("401 Unauthorized", b'{"message": "no"}'),
    "404-json": _answer("404 Not Found", b'{"message": 18446744073709551616}'),
}


@dataclass(frozen=True)
class Served:
    method: str
    kind: str
    held: float  # seconds from the request to the connection's end


class Front:
    """Relays connections to ``upstream_port`` on loopback; answers ``garbage_for`` methods with garbage."""

    def __init__(self, upstream_port: int, hold: float = 10.0) -> None:
        self.upstream_port = upstream_port
        self.hold = hold
        self.garbage_for: frozenset[str] = frozenset()
        self.served: list[Served] = []
        self._kinds: dict[str, Iterator[str]] = {}
        self._lock = threading.Lock()
        self._server = socket.create_server((LOOPBACK, 0))
        self.url = f"http://{LOOPBACK}:{self._server.getsockname()[1]}"
        self._closed = False

    def start(self) -> "Front":
        threading.Thread(target=self._accept, name="front", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def serve_garbage(self, methods: set[str]) -> None:
        with self._lock:
            self.garbage_for = frozenset(methods)

    def reset(self) -> None:
        """Forget what was served, so that a second pass of every kind is counted from none."""
        with self._lock:
            self.served.clear()
            self._kinds.clear()

    def kinds_served(self, method: str) -> set[str]:
        with self._lock:
            return {s.kind for s in self.served if s.method == method}

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        started = time.monotonic()
        try:
            head = self._read_head(client)
            method = head.split(b" ", 1)[0].decode("latin-1")
            with self._lock:
                garbage = method in self.garbage_for
                kind = next(self._kinds.setdefault(method, itertools.cycle(GARBAGE))) if garbage else ""
            if garbage:
                try:
                    GARBAGE[kind](client, self.hold)
                finally:  # the agent hanging up on a trickle or a huge body ends the answer: still served
                    with self._lock:
                        self.served.append(Served(method, kind, time.monotonic() - started))
            else:
                self._relay(client, head)
        except OSError:
            pass
        finally:
            client.close()

    @staticmethod
    def _read_head(client: socket.socket) -> bytes:
        client.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 1 << 16:
            chunk = client.recv(4096)
            if not chunk:
                break
            data += chunk
        return data

    def _relay(self, client: socket.socket, head: bytes) -> None:
        client.settimeout(None)
        with socket.create_connection((LOOPBACK, self.upstream_port), timeout=10) as upstream:
            upstream.settimeout(None)
            upstream.sendall(head)
            inbound = threading.Thread(target=pump, args=(client, upstream), daemon=True)
            inbound.start()
            pump(upstream, client)
            inbound.join(10)



# -- MQTT ---------------------------------------------------------------------------------------------------

def hostile_payloads(rng: random.Random, max_payload: int = 131072) -> list[bytes]:
    """One of each kind of hostile MQTT payload: malformed, out-of-range, mistyped, oversized, spoofed."""
    big = 2 ** 64
    texts = [
        "", "{", "not json", "[]", "null", "5", '"state"', "{}", "{\"state\": ", "\x00\x01",
        '{"state": {"level": %d}, "version": 3}' % big,
        '{"state": {"level": 1}, "version": %d}' % big,
        '{"state": {"level": -%d}, "version": 3}' % big,
        '{"state": {"level": 1e999}, "version": 3}',
        '{"state": {"level": -1e999}, "version": 3}',
        '{"state": {"level": NaN}, "version": 3}',
        '{"state": {"mode": "\\ud800"}, "version": 3}',
        '{"state": {"\\udfff": 1}, "version": 3}',
        '{"state": {"level": 1, "level": 2}, "version": 3}',
        '{"state": [1, 2], "version": 3}', '{"state": null, "version": 3}', '{"state": 5, "version": "3"}',
        '{"state": {"level": 1}, "version": -1}', '{"state": {"level": 1}, "version": 1.5}',
        '{"state": {"desired": {"level": {"nested": [1, {"a": null}]}}}, "version": 4}',
        # shaped as a whole-shadow read (get/accepted, update/documents), hostile inside
        '{"state": {"desired": {"level": %d}}, "version": 6}' % big,
        '{"state": {"desired": {"level": 1e999}}, "version": 6}',
        '{"state": {"desired": {"mode": "\ud800"}}, "version": 6}',
        '{"state": {"desired": {"level": 1}}, "version": %d}' % big,
        '{"state": {"desired": {"level": 1}, "delta": {"level": 1}}, "metadata": 5, "version": 6}',
        '{"previous": {"state": {}}, "current": {"state": {"desired": {"level": %d}}, "version": 7}}' % big,
        '{"state": {"desired": 5, "reported": "x"}, "version": 4}',
        '{"code": 409, "message": "Version conflict", "clientToken": "spoofed"}',
        '{"code": "x", "message": null}',
        '{"state": {"level": "%s"}, "version": 3}' % ("9" * 5000),
        '{"state": {"level": 7}, "version": %d}' % (2 ** 62),  # well-formed, far-future: a spoof
        '{"state": {"mode": "spoof"}, "version": %d, "timestamp": 99999999999}' % (2 ** 62 + 1),
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 5000 + "1" + "}" * 5000,
        '{"state": {"level": 1}, "version": 3, "pad": "%s"}' % ("p" * (max_payload + 10)),
        '{"state": {"level": 1}, "version": 3, "pad": "%s"}' % ("p" * (max_payload - 100)),
    ]
    out = [text.encode("utf-8", "surrogatepass") for text in texts]
    out += [b"\xff\xfe\xfd", b'{"state": {"level": "\xc3\x28"}}', bytes(rng.randrange(256) for _ in range(64))]
    out.append(json.dumps({"state": {f"k{i}": i for i in range(2000)}, "version": 5}).encode())
    return out
