"""Running the reference cloud in tests: ``python run.py cloud`` as a subprocess, and an MQTT probe.

Its fixtures (``cloud``, ``store_url``) are declared in tests/conftest.py's ``pytest_plugins``: every
test taking ``cloud`` runs once on SQLite and once on PostgreSQL, against the test's own
Mosquitto (``broker``). ``CloudProcess`` starts one on free ports, waits until its HTTP API answers and
its MQTT subscriptions are acknowledged, and stops it by pid (SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import ssl
import subprocess
import sys
import threading
import uuid

import gmqtt
import pytest

from cloud.loopback import free_port
from messages.transport.http import CloudClient, CloudError
from messages.transport.tls import TlsSettings, client_context
from tests.support.pki import CLOUD, session_pki
from tests.support.polling import wait_for
from tests.support.postgres import required as required_postgres

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN_PY = [sys.executable, str(ROOT / "run.py")]
ADMIN_TOKEN = "test-admin-token"
DEMO = {"uuid": "demo-device", "thing": "demo-device", "token": "demo-token"}  # the seeded device


class CloudProcess:
    """One cloud: ``settings`` ({section: {key: value}}) are written over the test defaults. It serves https
    (``https=False``: plain http) and reaches the
    test's broker over TLS with the session PKI's ``identity`` (a file stem: ``cloud``, or ``cloud-2`` for a
    second cloud on the same broker); ``{"mqtt": {"tls": False}}`` for a plaintext broker."""

    def __init__(self, workdir, broker_port: int, store_url: str, settings: dict | None = None,
                 identity: str = CLOUD, https: bool = True):
        self.workdir = pathlib.Path(workdir)
        self.http_port = free_port()
        pki = session_pki()
        cert, key = pki.files(identity)
        self.settings = {
            "http": {"port": self.http_port},
            "store": {"url": store_url},
            "mqtt": {"port": broker_port, "client_id": f"cloud-{uuid.uuid4().hex[:8]}", "reconnect_delay": 0.2,
                     "tls": True, "ca_file": pki.ca, "cert_file": cert, "key_file": key},
            "auth": {"admin_token": ADMIN_TOKEN},
            "log": {"level": "DEBUG"},
        }
        # https as shipped, with the session PKI's server certificate (devices may present theirs: mutual TLS)
        server_cert, server_key = pki.files("server") if https else ("", "")
        self.settings["http"].update(cert_file=server_cert, key_file=server_key, ca_file=pki.ca)
        self.https = https
        for section, values in (settings or {}).items():
            self.settings.setdefault(section, {}).update(values)
        self.config_path = self.workdir / f"cloud-{self.http_port}.toml"
        self.log_path = self.workdir / f"cloud-{self.http_port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.http_port}"

    def client(self, token: str | None = ADMIN_TOKEN) -> CloudClient:
        return CloudClient(self.url, token, tls=TlsSettings(session_pki().ca))

    def register(self, *things: str) -> None:
        """Register a device for each thing name (uuid = thing), so that the cloud serves its shadows over MQTT."""
        for thing in things:
            reply = self.client().register_device(thing, thing, uuid.uuid4().hex)
            assert reply.ok, reply.body

    def start(self, timeout: float = 20.0) -> "CloudProcess":
        self.config_path.write_text(_toml(self.settings))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*RUN_PY, "cloud", "--config", str(self.config_path)], cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=timeout, interval=0.05, what=f"the cloud on port {self.http_port}")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the cloud exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return self.client(None).health().status == 200
        except CloudError:
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop within ``timeout``; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the cloud ignored SIGTERM for {timeout} s") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _toml(settings: dict) -> str:
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]  # JSON scalars are TOML
    return "\n".join(lines) + "\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, postgres_cluster):
    """A fresh, empty store: a SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cloud.db"
        return
    cluster = required_postgres(postgres_cluster)
    name = cluster.create_database()
    yield cluster.url(name)
    cluster.drop_database(name)


@pytest.fixture
def cloud(broker, store_url, tmp_path):
    """A running cloud on the test's broker and store."""
    process = CloudProcess(tmp_path, broker.port, store_url).start()
    yield process
    process.stop()


# --- MQTT ------------------------------------------------------------------------------------------------

class MqttProbe:
    """A test's MQTT client (gmqtt on its own thread): subscribe, publish, and wait for messages.

    Over TLS with ``identity`` (a file stem of the session PKI: a device's uuid, ``cloud``...), by default the
    next probe identity, which may touch every thing; ``tls=False`` for a plaintext broker. Over TLS the broker
    takes the certificate's CN as the client id, whatever ``client_id`` says."""

    def __init__(self, port: int, client_id: str | None = None, identity: str | None = None, tls: bool = True):
        self._port = port
        pki = session_pki()
        self._tls = client_context(pki.tls(identity or pki.next_probe())) if tls else False
        self._client = gmqtt.Client(client_id or f"probe-{uuid.uuid4().hex[:8]}")
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._messages: list[tuple[str, bytes]] = []
        self._acked: set[int] = set()
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mqtt-probe", daemon=True)

    def __enter__(self) -> "MqttProbe":
        self._thread.start()
        self._call(self._client.connect("127.0.0.1", self._port, ssl=self._tls, keepalive=30))
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._call(self._client.disconnect())
        except (ssl.SSLError, OSError):
            pass  # the broker sent on while the TLS session closed (APPLICATION_DATA_AFTER_CLOSE_NOTIFY): we are gone
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def subscribe(self, *topics: str) -> None:
        """Subscribe (QoS 1) and wait for the broker's acknowledgement."""
        mid = self._call(self._subscribe(list(topics)))
        with self._changed:
            if not self._changed.wait_for(lambda: mid in self._acked, timeout=5):
                raise AssertionError(f"no SUBACK for {topics}")

    async def _subscribe(self, topics: list[str]) -> int:
        return self._client.subscribe([gmqtt.Subscription(topic, qos=1) for topic in topics])

    def publish(self, topic: str, payload: dict | bytes | str, qos: int = 1) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self._loop.call_soon_threadsafe(lambda: self._client.publish(topic, payload, qos=qos))

    def expect(self, topic: str, timeout: float = 5.0, where=lambda payload: True) -> dict:
        """The first message received on ``topic`` whose JSON payload satisfies ``where``; it is consumed."""
        found = self._take(lambda got, body: got == topic and where(body), timeout)
        if found is None:
            with self._changed:
                seen = sorted({got for got, _ in self._messages})
            raise AssertionError(f"nothing on {topic} within {timeout} s; topics seen: {seen}")
        return found[1]

    def received(self, topic: str) -> list[dict]:
        """What has arrived on ``topic`` so far (not consumed)."""
        with self._changed:
            return [json.loads(raw) for got, raw in self._messages if got == topic]

    def call(self, request_topic: str, payload: dict | bytes | str, token: str | None = None,
             timeout: float = 5.0) -> tuple[str, dict]:
        """Publish a shadow request and wait for its answer: ("accepted" | "rejected", body).

        Subscribe to ``request_topic``/accepted and /rejected first. With ``token`` the answer carrying
        that clientToken is taken; without, the first one.
        """
        answers = {f"{request_topic}/accepted": "accepted", f"{request_topic}/rejected": "rejected"}
        self.publish(request_topic, payload)
        found = self._take(lambda got, body: got in answers and (token is None or body.get("clientToken") == token),
                           timeout)
        if found is None:
            raise AssertionError(f"no answer to {request_topic} within {timeout} s")
        return answers[found[0]], found[1]

    def _take(self, match, timeout: float) -> tuple[str, dict] | None:
        def first():
            for index, (got, raw) in enumerate(self._messages):
                body = json.loads(raw)
                if match(got, body):
                    del self._messages[index]
                    return got, body
            return None

        with self._changed:
            return self._changed.wait_for(first, timeout=timeout)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def _on_message(self, client, topic, payload, qos, properties) -> int:
        with self._changed:
            self._messages.append((topic, payload))
            self._changed.notify_all()
        return 0

    def _on_subscribe(self, client, mid, qos, properties) -> None:
        with self._changed:
            self._acked.add(mid)
            self._changed.notify_all()
