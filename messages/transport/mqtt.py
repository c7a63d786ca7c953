"""An MQTT connection kept up by its own asyncio loop in a daemon thread (gmqtt; MQTT 3.1.1 or 5).

gmqtt's reconnection is replaced, not used: its first connect is never retried, its reconnect delay is
fixed and a refused CONNACK stops it for good. Here every attempt is a fresh client on the same client id
and a persistent session (clean_session=False; MQTT 5: session expiry), after a jittered exponential
backoff. Each connection subscribes again and counts as up only once the broker acknowledged every
subscription, so whoever reads after "up" cannot miss an answer.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from messages.transport.backoff import backoff_delay

log = logging.getLogger("fleetlet.mqtt")

CONNECT_TIMEOUT = 10.0  # seconds for TCP + CONNACK, and again for the SUBACKs
STABLE_AFTER = 10.0  # a connection that lasted this long resets the backoff; a flapping one does not
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

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"mqtt.protocol must be 4 (3.1.1) or 5, got {self.protocol}")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("mqtt.reconnect_min must be positive and at most mqtt.reconnect_max")
        if not self.client_id:
            raise ValueError("an MQTT client id is needed for a persistent session")

    @classmethod
    def from_config(cls, config: dict, client_id: str, clean: bool = False) -> "LinkSettings":
        mqtt = config["mqtt"]
        return cls(mqtt["host"], mqtt["port"], client_id, mqtt["protocol"], mqtt["keepalive"],
                   mqtt["session_expiry"], mqtt["reconnect_min"], mqtt["reconnect_max"], clean)


class _Client(gmqtt.Client):
    async def reconnect(self, delay=False):
        """Switched off: MqttLink reconnects, with backoff and a fresh client."""


class MqttLink:
    """Keeps one connection up and subscribed to ``topics``.

    ``on_message(topic, payload)`` and ``on_ready(ready)`` run in the link's thread: keep them short and
    thread-safe. :meth:`publish` may be called from any thread.
    """

    def __init__(self, settings: LinkSettings, topics: Sequence[str],
                 on_message: Callable[[str, bytes], None], on_ready: Callable[[bool], None] = lambda ready: None):
        self.settings = settings
        self.topics = tuple(topics)
        self._on_message, self._on_ready = on_message, on_ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: _Client | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.ready = False
        self.connections = 0

    # -- any thread --------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"mqtt-{self.settings.client_id}", daemon=True)
        self._thread.start()
        self._started.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect (the broker keeps the session) and end the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Send if connected; otherwise the message is dropped (callers time out and resend)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._publish, topic, payload, qos)

    # -- the link's thread ----------------------------------------------------------------------------------------
    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        self._started.set()
        try:
            self._loop.run_until_complete(self._run())
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            client, lost = self._new_client()
            connecting = asyncio.ensure_future(self._connect(client, lost))
            await self._first(connecting, self._stop.wait())  # a black-holed connect must not delay a stop
            if not connecting.done():
                connecting.cancel()
                await self._close(client)
                return
            try:
                connecting.result()
            except (LinkError, OSError, gmqtt.MQTTConnectError, asyncio.TimeoutError) as exc:
                failures += 1
                delay = backoff_delay(failures, self.settings.reconnect_min, self.settings.reconnect_max,
                                      random.random())
                log.warning("MQTT %s:%d: %s; retrying in %.1f s", self.settings.host, self.settings.port,
                            exc or type(exc).__name__, delay)
                await self._close(client)
                await self._pause(delay)
                continue
            up_since = time.monotonic()
            self._set_ready(True)
            await self._first(lost.wait(), self._stop.wait())
            self._set_ready(False)
            await self._close(client)
            if self._stop.is_set():
                return
            failures = 1 if time.monotonic() - up_since >= STABLE_AFTER else failures + 1
            delay = backoff_delay(failures, self.settings.reconnect_min, self.settings.reconnect_max, random.random())
            log.warning("MQTT connection to %s:%d lost; reconnecting in %.1f s", self.settings.host,
                        self.settings.port, delay)
            await self._pause(delay)

    def _new_client(self) -> tuple[_Client, asyncio.Event]:
        session = {} if self.settings.protocol == 4 or self.settings.clean else \
            {"session_expiry_interval": self.settings.session_expiry}
        client = _Client(self.settings.client_id, clean_session=self.settings.clean, **session)
        lost = asyncio.Event()
        client.on_disconnect = lambda *_: lost.set()
        client.on_message = self._message
        return client, lost

    async def _connect(self, client: _Client, lost: asyncio.Event) -> None:
        settings = self.settings
        await asyncio.wait_for(client.connect(settings.host, settings.port, keepalive=settings.keepalive,
                                              version=PROTOCOLS[settings.protocol]), CONNECT_TIMEOUT)
        acked = asyncio.get_running_loop().create_future()

        def subscribed(_client, mid, granted, _properties):  # runs later in this loop: expected_mid is set
            if mid == expected_mid and not acked.done():
                acked.set_result(granted)

        client.on_subscribe = subscribed
        expected_mid = client.subscribe([gmqtt.Subscription(topic, qos=1) for topic in self.topics])
        await asyncio.wait_for(self._first(acked, lost.wait()), CONNECT_TIMEOUT)
        if not acked.done():
            raise LinkError("connection lost before the subscriptions were acknowledged")
        granted = acked.result()
        refused = [topic for topic, qos in zip(self.topics, granted) if qos >= 0x80]
        if refused or len(granted) != len(self.topics):
            raise LinkError(f"the broker refused the subscriptions {refused or granted}")
        self.connections += 1
        self._client = client

    @staticmethod
    async def _first(*awaitables) -> None:
        """Wait until one finishes; cancel the coroutines left (a future passed in is left alone)."""
        tasks = [a if asyncio.isfuture(a) else asyncio.ensure_future(a) for a in awaitables]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task, awaitable in zip(tasks, awaitables):
                if task is not awaitable:
                    task.cancel()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _close(self, client: _Client) -> None:
        self._client = None
        try:
            await asyncio.wait_for(client.disconnect(), 2.0)
        except Exception as exc:  # noqa: BLE001 - the connection is being dropped either way
            log.debug("MQTT disconnect: %s", exc)

    def _set_ready(self, ready: bool) -> None:
        self.ready = ready
        try:
            self._on_ready(ready)
        except Exception:  # noqa: BLE001 - a failing callback must not take the connection down
            log.exception("MQTT link: on_ready callback failed")

    def _message(self, _client, topic: str, payload: bytes, _qos, _properties) -> int:
        try:
            self._on_message(topic, payload)
        except Exception:  # noqa: BLE001 - one bad message must not take the connection down
            log.exception("MQTT link: on_message failed for %s", topic)
        return 0

    def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        client = self._client
        if client is None or not self.ready:
            log.debug("MQTT link down: dropped a publish to %s", topic)
            return
        try:
            client.publish(topic, payload, qos=qos)
        except (OverflowError, OSError, AttributeError) as exc:
            log.warning("MQTT publish to %s failed: %s", topic, exc)
