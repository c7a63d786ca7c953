"""Garbage from the cloud's HTTP side never crashes the poller or the reporter: each answer is a failed poll
(or send), recorded and backed off (issue 14: BadStatusLine and a 4,301-digit port crashed them).

The actors' handlers run in the test's process, with their shell (publish, timers, store) replaced by lists:
the decisions under test are the handlers' own."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from actors.outbox import OutboxSender
from actors.target.policy import Policy
from actors.target.poller import Poller, PollerSettings
from actors.target.reporter import Reporter, ReporterSettings
from messages.bus.outbox import RecordError
from messages.bus.target import TargetStateFetched, TargetStateRejected
from messages.transport.http import CloudClient
from store import PendingReport


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + \
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def target(**config) -> bytes:
    service = {"serviceName": "s", "config": {"image": "x", **config}}
    return json.dumps({"apps": {"1": {"services": [service]}}}).encode()


# A 200 whose bad Content-Length http.client ignores, reading to the end: an answer like any other.
LENIENT = [b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n{}", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}"]
GARBAGE = [
    b"", b"garbage\r\n\r\n", b"\x00\xff\xfe" * 100, b"HTTP/1.1\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 99999999999999999999 X\r\n\r\n", b"HTTP/9.9 200 OK\r\n\r\n", b"ICY 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70_000 + b"\r\n\r\n",  # a header line past http.client's limit
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(200)) + b"\r\n",  # too many headers
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{",  # the body ends early
    *LENIENT,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 5000 + b"\r\n",
    b"HTTP/1.1 500 Internal\r\nContent-Length: 2\r\n\r\n{}", b"HTTP/1.1 302 Found\r\nLocation: http://x/\r\n\r\n",
    ok(b"not json"), ok(b"{\"apps\": {}, \"apps\": {}}"), ok(b"[1, 2]"), ok(b"{\"apps\": 1e999}"),
    ok(b"\xff\xfe"), ok(b"[" * 100_000),
    ok(b"{\"apps\": {\"1\": {\"services\": [], \"appId\": 18446744073709551616}}}"),
    ok(target(ports=["9" * 4301])), ok(target(ports=["1:" + "9" * 5000])),  # int() of > 4,300 digits
    ok(target(environment={"K": "\ud800"})), ok(target(ports=[f"{i}:{i}" for i in range(1, 9000)])),
    ok(b"x" * (1024 * 1024 + 10)), ok(b"{}", b"ETag: " + b"e" * 5000 + b"\r\n"),
]


class GarbageServer:
    """Answers each connection with the next scripted bytes, whatever was asked, then closes it."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        for answer in self.answers:
            connection, _ = self.listener.accept()
            with connection:
                connection.settimeout(5)
                try:
                    connection.recv(65536)
                    connection.sendall(answer)
                    connection.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


class NoStore:
    def load_target(self):
        return None

    def last_target_rejection(self):
        return None


def shell(actor, published: list, timers: list) -> None:
    actor.publish = published.append
    actor.after = lambda seconds, payload: timers.append((seconds, payload))


@pytest.fixture
def server():
    servers = []

    def start(answers):
        servers.append(GarbageServer(answers))
        return servers[-1]

    yield start
    for each in servers:
        each.close()


def test_every_garbage_answer_is_a_recorded_failed_poll_that_backs_off(server):
    cloud = server(GARBAGE)
    poller, published, timers = Poller(), [], []
    shell(poller, published, timers)
    poller.options, poller.uuid, poller.store = PollerSettings(backoff_min=2.0), "u", NoStore()
    poller.policy = Policy()
    poller.client = CloudClient(cloud.url, "token", timeout=5.0)
    poller.failures, poller.generation, poller.error_shown, poller.last_poll = 0, 0, False, None
    for index, answer in enumerate(GARBAGE):
        published.clear()
        poller._poll()  # raises nothing
        assert poller.failures == index + 1, answer[:80]
        (outcome,) = [msg for msg in published if isinstance(msg, (RecordError, TargetStateRejected))]
        assert not any(isinstance(msg, TargetStateFetched) for msg in published)
        assert timers[-1][0] >= 1.0  # backed off, never a hot loop


def test_every_garbage_answer_is_a_recorded_failed_send_that_is_retried(server):
    answers = [answer for answer in GARBAGE  # every answer but a whole 200, which accepts a report
               if not answer.startswith(b"HTTP/1.1 200 OK\r\nContent-Type") and answer not in LENIENT]
    cloud = server(answers)
    reporter, published, timers = Reporter(), [], []
    shell(reporter, published, timers)
    reporter.options, reporter.uuid = ReporterSettings(), "u"
    reporter.client = CloudClient(cloud.url, "token", timeout=5.0)
    reporter.sender = OutboxSender("device-state", {}, PendingReport(1, {"a": 1}))
    reporter.failures, reporter.error_shown, reporter.retry_scheduled = 0, False, False
    for index, answer in enumerate(answers):
        published.clear()
        reporter._send()  # raises nothing
        assert reporter.failures == index + 1, answer[:80]
        assert [type(msg) for msg in published] == [RecordError]
        assert reporter.sender.in_flight is None and reporter.sender.pending == PendingReport(1, {"a": 1})
        reporter.retry_scheduled = False
