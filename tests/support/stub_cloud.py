"""A tiny stand-in for the cloud's HTTP API, for the unit tests of the poller and the reporter.

It runs in the test's own process (a thread), answers with what the test scripted, and records every
request, so a test can assert what the agent sent (headers, bodies) and when.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict  # lower-case names
    body: bytes
    at: float  # monotonic

    def json(self):
        return json.loads(self.body)


class StubCloud:
    """`reply(request: Seen)` -> (status, headers, body bytes); set `self.reply` to script the answers."""

    def __init__(self, reply=None, tls=None):
        """``tls``: an ssl server context, to answer over https."""
        self.reply = reply or (lambda request: (404, {}, b""))
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                               time.monotonic())
                with stub._lock:
                    stub.requests.append(request)
                status, headers, payload = stub.reply(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            do_GET = do_PATCH = do_POST = _serve

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StubCloud":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def seen(self, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]
