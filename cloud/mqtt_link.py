"""The shadow service's one MQTT connection (gmqtt): reconnects, subscribes, and publishes with flow control.

gmqtt has no flow control of its own: more QoS 1 publishes awaiting PUBACK than the broker's receive
maximum raises OverflowError. Every publish therefore goes through an outbox drained while fewer than
``publish_window`` are in flight (and while connected); a PUBACK or a new connection drains it further.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Callable

import gmqtt
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv50
from gmqtt.storage import PersistentStorage

from cloud.settings import MqttSettings

log = logging.getLogger("fleetlet.cloud.mqtt")


class _InFlight(PersistentStorage):
    """gmqtt's store of unacknowledged QoS 1 publishes, telling us when one leaves it."""

    def __init__(self, on_release: Callable[[], None], on_cleared: Callable[[list[int]], None]):
        super().__init__()
        self._on_release = on_release
        self._on_cleared = on_cleared

    @property
    def count(self) -> int:
        return len(self.get_all())

    def remove_message_by_mid(self, mid):
        super().remove_message_by_mid(mid)
        self._on_release()

    def clear(self):
        # Called when the broker no longer has our session: those publishes are gone with it.
        cleared = [mid for mid, _ in self.get_all()]
        super().clear()
        if cleared:
            self._on_cleared(cleared)
        self._on_release()


class MqttLink:
    """Connects (retrying every ``reconnect_delay``), subscribes to ``topics`` on every connection,
    hands each received message to ``on_message(topic, payload)`` and publishes QoS 1 in order."""

    def __init__(self, settings: MqttSettings, topics: list[str], on_message: Callable[[str, bytes], None]):
        self._settings = settings
        self._topics = topics
        self._on_message = on_message
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._in_flight = _InFlight(self._drain, self._forget_ids)
        self._client: gmqtt.Client | None = None
        self._connected = False
        self._subscribe_mid: int | None = None
        self.subscribed = False
        self.dropped = 0
        self._closing = False

    @property
    def ready(self) -> bool:
        """Connected, and the broker acknowledged every subscription of this connection."""
        return self._connected and self.subscribed

    async def connect(self, stop: asyncio.Event) -> None:
        """Connect, retrying until it works or ``stop`` is set; gmqtt itself reconnects afterwards."""
        settings = self._settings
        client = gmqtt.Client(settings.client_id, clean_session=False, persistent_storage=self._in_flight,
                              session_expiry_interval=settings.session_expiry)
        client.set_config({"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": settings.reconnect_delay})
        client.on_connect = self._connected_cb
        client.on_disconnect = self._disconnected_cb
        client.on_subscribe = self._subscribed_cb
        client.on_message = self._message_cb
        self._client = client
        while not stop.is_set():  # gmqtt never retries a first connection
            try:
                await client.connect(settings.host, settings.port, keepalive=settings.keepalive, version=MQTTv50)
                return
            except (OSError, gmqtt.MQTTConnectError) as exc:
                log.warning("broker %s:%d not reachable (%s); retrying in %.1f s",
                            settings.host, settings.port, exc, settings.reconnect_delay)
                try:
                    await asyncio.wait_for(stop.wait(), settings.reconnect_delay)
                except asyncio.TimeoutError:
                    pass

    async def close(self) -> None:
        """Disconnect for good; what is still in the outbox is dropped."""
        self._closing = True
        if self._client is not None:
            await self._client.disconnect()

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue a QoS 1 publish (loop thread only); it leaves as soon as the window allows."""
        if len(self._outbox) >= self._settings.outbox_limit:
            self._outbox.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("outbox full: %d publishes dropped so far", self.dropped)
        self._outbox.append((topic, payload))
        self._drain()

    def _drain(self) -> None:
        while self._outbox and self._connected and self._in_flight.count < self._settings.publish_window:
            topic, payload = self._outbox.popleft()
            self._client.publish(topic, payload, qos=1)

    def _forget_ids(self, mids: list[int]) -> None:
        # gmqtt drops the publishes of a lost session but keeps their packet ids reserved; without this the
        # id pool would run dry after a few broker restarts and every publish would raise OverflowError.
        log.warning("the broker lost our session: %d unacknowledged publishes are gone", len(mids))
        for mid in mids:
            self._client._package_handler.id_generator.free_id(mid)

    # --- gmqtt callbacks (in the loop) ---------------------------------------------------------------------

    def _connected_cb(self, client, flags, rc, properties) -> None:
        log.info("connected to the broker at %s:%d", self._settings.host, self._settings.port)
        self._connected = True
        self.subscribed = False
        self._subscribe_mid = client.subscribe([gmqtt.Subscription(topic, qos=1) for topic in self._topics])
        self._drain()

    def _subscribed_cb(self, client, mid, granted_qos, properties) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [topic for topic, qos in zip(self._topics, granted_qos) if qos >= 0x80]
        if refused:
            log.error("the broker refused the subscriptions %s", refused)
            return
        self.subscribed = True
        log.info("subscribed to %d shadow request topics", len(self._topics))

    def _disconnected_cb(self, client, packet, exc=None) -> None:
        if self._connected and not self._closing:
            log.warning("disconnected from the broker; reconnecting")
        self._connected = False
        self.subscribed = False

    def _message_cb(self, client, topic, payload, qos, properties) -> int:
        self._on_message(topic, payload)
        return 0  # PUBACK: success
