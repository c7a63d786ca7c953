"""The one MQTT link (gmqtt; MQTT 3.1.1 or 5) of the agent and the cloud: reconnects, resubscribes, flow control.

gmqtt's own reconnection is replaced, not used: its first connect is never retried, its reconnect delay is
fixed and a refused CONNACK stops it for good. Here every attempt is a fresh client on the same client id and,
unless ``clean``, a persistent session (clean_session=False; MQTT 5: session expiry) after the shared backoff
(messages.transport.backoff). Each connection subscribes again and counts as up ("ready") only once the
broker acknowledged every subscription, so whoever reads after "up" cannot miss an answer.

gmqtt has no flow control either: more QoS 1 publishes awaiting PUBACK than the broker's receive maximum
raises OverflowError. Every publish therefore goes through a bounded outbox, drained while the link is ready
and fewer than ``publish_window`` are in flight; a PUBACK or a new connection drains it further. A fresh
client starts with an empty in-flight store, so the publishes a lost connection left unacknowledged go back
to the front of the outbox: delivery is at least once, across reconnects too (never silently dropped, except
the oldest ones when the outbox overflows, which ``dropped`` counts).

TLS (:mod:`messages.transport.tls`: CA verification, a client certificate, ALPN, a server name) and a
username/password are the settings'; a certificate the link refuses is reported with which certificate and
which check, through ``on_failure`` (every failed attempt's reason; the agent records it for ``run.py
status``), and retried after the same backoff as any other failure. MQTT 5's ``maximum_packet_size`` is sent
in CONNECT when set, so the broker drops what the receiver would refuse anyway instead of sending it.

The link runs in an asyncio loop: the cloud awaits :meth:`MqttLink.run` in its own loop; the agent, whose
actors have none, hosts it in a daemon thread with :meth:`MqttLink.start` / :meth:`MqttLink.stop`.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

from messages.transport import usage
from messages.transport.backoff import backoff_delay
from messages.transport.tls import TlsSettings, client_context, describe_refusal

log = logging.getLogger("fleetlet.mqtt")

CONNECT_TIMEOUT = 10.0  # seconds for TCP + CONNACK, and again for the SUBACKs
STABLE_AFTER = 10.0  # a connection that lasted this long resets the backoff; a flapping one does not
CLOSE_TIMEOUT = 2.0  # seconds a disconnect may take (gmqtt waits for the in-flight publishes first)
PROTOCOLS = {4: MQTTv311, 5: MQTTv50}


class LinkError(Exception):
    """This connection attempt failed; the text says why. The link retries after a backoff."""


@dataclasses.dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    protocol: int = 5
    keepalive: int = 30
    session_expiry: int = 604800  # MQTT 5 only; 3.1.1 keeps the session until the client comes back clean
    reconnect_min: float = 0.5
    reconnect_max: float = 60.0
    clean: bool = False  # True for throwaway observers (run.py shadow watch): no session left behind
    publish_window: int = 16  # QoS 1 publishes in flight at most; Mosquitto's receive maximum is 20
    outbox_limit: int = 1000  # publishes waiting for the window or a connection; the oldest go first
    tls: TlsSettings | None = None  # None: plaintext (loopback only, conf refuses it elsewhere)
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    max_packet_size: int = 0  # MQTT 5: the largest packet the broker may send us; 0 sends no limit

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"mqtt.protocol must be 4 (3.1.1) or 5, got {self.protocol}")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("mqtt.reconnect_min must be positive and at most mqtt.reconnect_max")
        if not self.client_id:
            raise ValueError("an MQTT client id is needed for a persistent session")
        if self.publish_window < 1 or self.outbox_limit < 1:
            raise ValueError("mqtt.publish_window and mqtt.outbox_limit must be at least 1")
        if self.password and not self.username:
            raise ValueError("mqtt.password_file needs mqtt.username")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], client_id: str, clean: bool = False,
                    max_packet_size: int = 0) -> "LinkSettings":
        """The agent's link from its checked ``[mqtt]`` section and the password conf read from its file
        (``credentials.mqtt_password``); ``max_packet_size`` is what the caller refuses beyond."""
        mqtt = config["mqtt"]
        tls = TlsSettings(mqtt["ca_file"], mqtt["cert_file"], mqtt["key_file"], tuple(mqtt["alpn"]),
                          mqtt["server_name"]) if mqtt["tls"] else None
        return cls(mqtt["host"], mqtt["port"], client_id, mqtt["protocol"], mqtt["keepalive"],
                   mqtt["session_expiry"], mqtt["reconnect_min"], mqtt["reconnect_max"], clean, tls=tls,
                   username=mqtt["username"], password=config.get("credentials", {}).get("mqtt_password", ""),
                   max_packet_size=max_packet_size)


class _Client(gmqtt.Client):  # type: ignore[misc]  # gmqtt ships no type information
    async def reconnect(self, delay: bool = False) -> None:
        """Switched off: MqttLink reconnects, with backoff and a fresh client."""


class _InFlight(PersistentStorage):  # type: ignore[misc]  # gmqtt ships no type information
    """One connection's unacknowledged QoS 1 publishes (gmqtt's store), kept with their topic and payload so
    that they can be sent again on the next connection, and telling the link when a PUBACK frees the window."""

    def __init__(self, on_ack: Callable[[], None]):
        super().__init__()
        self.sent: dict[int, tuple[str, bytes]] = {}  # packet id -> (topic, payload), in send order
        self.sending: tuple[str, bytes] | None = None  # set around client.publish, which stores the packet
        self._on_ack = on_ack

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if self.sending is not None:
            self.sent[mid] = self.sending

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        if self.sent.pop(mid, None) is not None:
            self._on_ack()


class MqttLink:
    """Keeps one connection up and subscribed to ``topics``; publishes QoS 1 in order, within the window.

    ``on_message(topic, payload)`` and ``on_ready(ready)`` run in the link's loop: keep them short (and
    thread-safe when the link has its own thread). :meth:`publish` may be called from any thread.
    """

    def __init__(self, settings: LinkSettings, topics: Sequence[str],
                 on_message: Callable[[str, bytes], None], on_ready: Callable[[bool], None] = lambda ready: None,
                 on_failure: Callable[[str], None] = lambda reason: None):
        self.settings = settings
        self.topics = tuple(topics)
        self._on_message, self._on_ready, self._on_failure = on_message, on_ready, on_failure
        self.last_failure: str | None = None
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: _Client | None = None
        self._in_flight: _InFlight | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.ready = False
        self.connections = 0
        self.dropped = 0

    # -- any thread --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Run the link in a daemon thread of its own (for callers without an asyncio loop)."""
        self._thread = threading.Thread(target=self._main, name=f"mqtt-{self.settings.client_id}", daemon=True)
        self._thread.start()
        self._started.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        """End what :meth:`start` began: disconnect (the broker keeps the session) and join the thread."""
        loop, thread_stop = self._loop, self._thread_stop
        if loop is not None and thread_stop is not None and self._thread is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(thread_stop.set)
            self._thread.join(timeout)

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue a QoS 1 publish; it leaves as soon as the link is ready and the window allows."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._queue(topic, payload)
        else:
            loop.call_soon_threadsafe(self._queue, topic, payload)

    # -- the link's loop ------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Connect, and reconnect after every failure or loss, until ``stop`` is set; then disconnect."""
        self._loop = asyncio.get_running_loop()
        failures = 0
        while not stop.is_set():
            client, in_flight, lost = self._new_client()
            connecting = asyncio.ensure_future(self._connect(client, in_flight, lost))
            await _first(connecting, stop.wait())  # a black-holed connect must not delay a stop
            if not connecting.done():
                connecting.cancel()
                await self._close(client)
                return
            try:
                connecting.result()
            except (LinkError, OSError, gmqtt.MQTTConnectError, asyncio.TimeoutError) as exc:
                failures += 1
                delay = self._delay(failures)
                reason = await self._reason(exc)
                log.warning("MQTT %s:%d: %s; retrying in %.1f s", self.settings.host, self.settings.port,
                            reason, delay)
                self._failed(reason)
                await self._close(client)
                await _pause(stop, delay)
                continue
            up_since = time.monotonic()
            self.last_failure = None
            self._set_ready(True)
            self._drain()
            await _first(lost.wait(), stop.wait())
            self._set_ready(False)
            await self._close(client)
            if stop.is_set():
                return
            failures = 1 if time.monotonic() - up_since >= STABLE_AFTER else failures + 1
            delay = self._delay(failures)
            log.warning("MQTT connection to %s:%d lost; reconnecting in %.1f s", self.settings.host,
                        self.settings.port, delay)
            await _pause(stop, delay)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        thread_stop = asyncio.Event()
        self._thread_stop = thread_stop  # before _loop: stop() takes a set _loop to mean that it can stop
        self._loop = loop
        self._started.set()
        try:
            loop.run_until_complete(self.run(thread_stop))
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _reason(self, exc: BaseException) -> str:
        """What went wrong, in words: for a refused certificate, which one and which check."""
        settings = self.settings
        if isinstance(exc, ssl.SSLCertVerificationError):
            server_name = settings.tls.server_name if settings.tls is not None else ""
            return await asyncio.to_thread(describe_refusal, exc, "broker", settings.host, settings.port,
                                           server_name)
        if isinstance(exc, ssl.SSLError):
            return f"TLS with broker {settings.host}:{settings.port} failed: {exc.reason or exc}"
        return str(exc) or type(exc).__name__

    def _failed(self, reason: str) -> None:
        self.last_failure = reason
        _notify("on_failure", self._on_failure, reason)

    def _delay(self, failures: int) -> float:
        return backoff_delay(failures, self.settings.reconnect_min, self.settings.reconnect_max, random.random())

    def _new_client(self) -> tuple[_Client, _InFlight, asyncio.Event]:
        settings = self.settings
        properties: dict[str, int] = {}
        if settings.protocol == 5:
            if not settings.clean:
                properties["session_expiry_interval"] = settings.session_expiry
            if settings.max_packet_size:
                properties["maximum_packet_size"] = settings.max_packet_size
        in_flight = _InFlight(self._drain)
        client = _Client(settings.client_id, clean_session=settings.clean, persistent_storage=in_flight,
                         **properties)
        if settings.username:
            client.set_auth_credentials(settings.username, settings.password or None)
        lost = asyncio.Event()
        client.on_disconnect = lambda *_: lost.set()
        client.on_message = self._message
        return client, in_flight, lost

    async def _connect(self, client: _Client, in_flight: _InFlight, lost: asyncio.Event) -> None:
        settings = self.settings
        try:  # built for each attempt: renewed certificate files are taken at the next connection
            context = False if settings.tls is None else client_context(settings.tls)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise LinkError(f"cannot use the TLS files: {exc}") from None
        connecting = asyncio.ensure_future(client.connect(settings.host, settings.port, ssl=context,
                                                          keepalive=settings.keepalive,
                                                          version=PROTOCOLS[settings.protocol]))
        # gmqtt's connect waits out its timeout when the broker closes the connection before CONNACK, which is
        # how a broker refuses a client certificate (the TLS 1.3 handshake ends before it checks ours).
        await asyncio.wait_for(_first(connecting, lost.wait()), CONNECT_TIMEOUT)
        if not connecting.done():
            connecting.cancel()
            raise LinkError("the broker closed the connection before accepting it" +
                            ("; this is how it refuses a client certificate it does not trust"
                             if settings.tls is not None and settings.tls.cert_file else ""))
        connecting.result()
        acked: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

        # runs later in this loop: expected_mid is set
        def subscribed(_client: object, mid: int, granted: list[int], _properties: object) -> None:
            if mid == expected_mid and not acked.done():
                acked.set_result(granted)

        client.on_subscribe = subscribed
        expected_mid = client.subscribe([gmqtt.Subscription(topic, qos=1) for topic in self.topics])
        await asyncio.wait_for(_first(acked, lost.wait()), CONNECT_TIMEOUT)
        if not acked.done():
            raise LinkError("connection lost before the subscriptions were acknowledged")
        granted = acked.result()
        refused = [topic for topic, qos in zip(self.topics, granted, strict=False) if qos >= 0x80]
        if refused or len(granted) != len(self.topics):
            raise LinkError(f"the broker refused the subscriptions {refused or granted}")
        self.connections += 1
        self._client, self._in_flight = client, in_flight

    async def _close(self, client: _Client) -> None:
        """Drop the connection; what it left unacknowledged goes back to the front of the outbox."""
        if self._client is client:
            unacked = [] if self._in_flight is None else list(self._in_flight.sent.values())  # both set, or neither
            self._client, self._in_flight = None, None
            self._outbox.extendleft(reversed(unacked))
            self._trim()
        try:
            await asyncio.wait_for(client.disconnect(), CLOSE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the connection is being dropped either way
            log.debug("MQTT disconnect: %s", exc)

    def _set_ready(self, ready: bool) -> None:
        self.ready = ready
        _notify("on_ready", self._on_ready, ready)

    def _message(self, _client: object, topic: str, payload: bytes, _qos: int, _properties: object) -> int:
        usage.count("mqtt", "received", len(topic) + len(payload))
        try:
            self._on_message(topic, payload)
        except Exception:  # noqa: BLE001 - one bad message must not take the connection down
            log.exception("MQTT link: on_message failed for %s", topic)
        return 0  # PUBACK: success

    def _queue(self, topic: str, payload: bytes) -> None:
        self._outbox.append((topic, payload))
        self._trim()
        self._drain()

    def _trim(self) -> None:
        while len(self._outbox) > self.settings.outbox_limit:
            self._outbox.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("MQTT outbox full: %d publishes dropped so far", self.dropped)

    def _drain(self) -> None:
        client, in_flight = self._client, self._in_flight
        while self._outbox and self.ready and client is not None and in_flight is not None and \
                len(in_flight.sent) < self.settings.publish_window:
            topic, payload = self._outbox.popleft()
            in_flight.sending = (topic, payload)
            try:
                client.publish(topic, payload, qos=1)
                usage.count("mqtt", "sent", len(topic) + len(payload))
            except OverflowError:  # the broker's receive maximum is below our window: wait for a PUBACK
                self._outbox.appendleft((topic, payload))
                return
            except (OSError, AttributeError) as exc:  # the connection is going; its loss is noticed elsewhere
                self._outbox.appendleft((topic, payload))
                log.debug("MQTT publish to %s deferred: %s", topic, exc)
                return
            finally:
                in_flight.sending = None


def _notify(name: str, callback: Callable[[Any], None], value: object) -> None:
    try:
        callback(value)
    except Exception:  # noqa: BLE001 - a failing callback must not take the connection down
        log.exception("MQTT link: %s callback failed", name)


async def _first(*awaitables: Awaitable[object]) -> None:
    """Wait until one finishes; cancel the coroutines left (a future passed in is left alone)."""
    tasks = [a if asyncio.isfuture(a) else asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task, awaitable in zip(tasks, awaitables, strict=True):
            if task is not awaitable:
                task.cancel()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
