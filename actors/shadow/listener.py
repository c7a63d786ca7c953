"""The shadow listener actor: a thin shell around the protocol (actors.shadow.sync, pure), the MQTT link
(messages.transport.mqtt, its own thread) and the inbox between them (actors.shadow.inbox).

It recovers every shadow's last known document, pending report and recorded errors from the store when
it (re)starts, so the device works from its last desired state even with the broker unreachable, and a
crash of this process loses nothing. Deltas go out as ShadowDeltaUpdated to the handlers (actors subscribed to
ShadowDeltaUpdated, plus handler functions named in ``shadow.handlers``); their ShadowDeltaApplied answers become
reports through the persistence actor's outbox (EnqueueReport -> ReportQueued -> AckReport).
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import secrets
import threading
import time

import conf
import messages
from actors.runtime.base import FleetletActor
from actors.shadow.inbox import Inbox
from actors.shadow.payloads import Accepted, Delta, Document, PayloadError, Rejected, parse_emqx_view
from actors.shadow.sync import (
    Publish,
    ReadOverHttp,
    Recovered,
    ShadowSync,
    SyncSettings,
    channel_of,
)
from messages.bus.outbox import ClearError, RecordError, ReportQueued, StoreReopened
from messages.bus.shadow import ShadowDeltaApplied, ShadowDeltaUpdated, ShadowInboxFilled
from messages.bus.target import PollNow
from messages.protocol import json as strict_json
from messages.transport.http import CloudClient, CloudError
from messages.transport.mqtt import LinkSettings, MqttLink
from store import Store, StoreMissing

POLL_INTERVAL = 0.25  # seconds: timeouts are checked, and the inbox drained if a doorbell went missing
PACKET_OVERHEAD = 512  # MQTT bytes around a payload: fixed header, topic (a shadow's is < 256), id, properties
LINK_ERROR = ("mqtt", "connect")  # (source, key) of the recorded reason the broker cannot be reached


@dataclasses.dataclass(frozen=True)
class Tick:
    """The listener's one timer: time out reads, reports and applies; drain an inbox whose doorbell was lost."""


def delta_handlers(config: dict) -> list[str]:
    """Who answers a ShadowDeltaUpdated: every enabled actor subscribed to it, and every handler function."""
    actors = [name for name, entry in config.get("actors", {}).items()
              if entry.get("enabled", True) and "ShadowDeltaUpdated" in entry.get("subscribes", [])]
    return actors + list(config["shadow"]["handlers"])


def load_handler_function(path: str):
    """``package.module:function``: called as ``function(ShadowDeltaUpdated) -> (reported, failures)``."""
    module_name, _, attribute = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute) if attribute else None
    except (ImportError, AttributeError) as exc:
        raise conf.ConfigError(f"shadow.handlers: cannot load {path!r}: {exc}") from None
    if not callable(function):
        raise conf.ConfigError(f"shadow.handlers: {path!r} is not 'package.module:function'")
    return function


def recover(store_path: str, thing: str, names: tuple[str, ...]) -> dict[str, Recovered]:
    """Each shadow's state as the store keeps it (nothing yet when the writer has not created the store)."""
    try:
        store = Store.open(store_path, readonly=True)
    except StoreMissing:
        return {name: Recovered() for name in names}
    with store:
        errors = store.errors()
        recovered = {}
        for name in names:
            channel = channel_of(thing, name)
            shadow, pending = store.load_shadow(thing, name), store.pending_report(channel)
            state = shadow.document.get("state", {}) if shadow else {}
            recovered[name] = Recovered(
                desired=state.get("desired") or {},
                reported=state.get("reported") or store.load_accepted(channel) or {},
                version=shadow.version if shadow else None,
                outbox=(pending.report_id, pending.patch) if pending else None,
                errors={e["key"]: e["message"] for e in errors if e["source"] == channel})
        return recovered


class ShadowListener(FleetletActor):
    uses = ("device", "device.token", "mqtt", "credentials.mqtt_password", "shadow", "store", "cloud", "actors")
    link: MqttLink  # set in started(); stopping() may come before it

    def started(self) -> None:
        settings = SyncSettings.from_config(self.config)
        self.thing_name = self.config["device"]["thing"]
        self.functions = {path: load_handler_function(path) for path in self.config["shadow"]["handlers"]}
        # Tokens differ per incarnation, so a late answer to a request of the previous one matches nothing.
        prefix = f"fl{secrets.token_hex(4)}-"
        handlers = delta_handlers(self.config)
        recovered = recover(self.config["store"]["path"], self.thing_name, settings.names)
        self.syncs = {name: ShadowSync(self.thing_name, name, settings, handlers, f"{prefix}{index}-", recovered[name])
                      for index, name in enumerate(settings.names)}
        self.by_channel = {sync.channel: sync for sync in self.syncs.values()}
        self.cloud = CloudClient.from_config(self.config)
        self.inbox = Inbox(self.thing_name, settings.profile, settings.names, prefix, settings.limits,
                           self.config["device"]["uuid"], ring=self._ring)
        self.epoch, self.ready = 0, False
        self.reports_sent: dict[object, float] = {}  # clientToken -> when the report went out
        logging.getLogger("gmqtt").setLevel(logging.WARNING)  # its INFO logs every SUBACK
        max_packet = self.config["shadow"]["max_payload"] + PACKET_OVERHEAD  # the broker drops what we would
        self.link = MqttLink(LinkSettings.from_config(self.config, client_id=self.thing_name,
                                                      max_packet_size=max_packet),
                             self.inbox.topics, self.inbox.receive, self.inbox.link_changed, self.inbox.link_failed)
        now = time.monotonic()
        for sync in self.syncs.values():
            self._carry_out(sync, sync.start(now))
        self.link.start()
        self.after(POLL_INTERVAL, Tick())

    def stopping(self) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            link.stop()

    # -- wakeups ------------------------------------------------------------------------------------------
    def _ring(self) -> None:
        """Runs in the link's (or an HTTPS read's) thread: only a doorbell crosses into the actor."""
        self.send(self.myAddress, messages.encode(ShadowInboxFilled()))

    def on_ShadowInboxFilled(self, msg: ShadowInboxFilled) -> None:
        self._drain()

    def on_timer(self, payload: object) -> None:  # its one timer is Tick
        self._drain()
        now = time.monotonic()
        for sync in self.syncs.values():
            self._carry_out(sync, sync.tick(now))
        self.after(POLL_INTERVAL, Tick())

    def _drain(self) -> None:
        batch = self.inbox.take()
        now = time.monotonic()
        if batch.epoch != self.epoch or (self.ready and not batch.ready):
            for sync in self.syncs.values():
                self._carry_out(sync, sync.link_down())
        if batch.epoch != self.epoch and batch.ready:
            for sync in self.syncs.values():
                self._carry_out(sync, sync.link_up(now))
        self.epoch, self.ready = batch.epoch, batch.ready
        for name, incoming in batch.responses + batch.deltas:
            self._count(name, incoming, now)
            self._carry_out(self.syncs[name], self.syncs[name].receive(incoming, now))
        for name, count, reason in batch.malformed:
            self._carry_out(self.syncs[name], self.syncs[name].receive_malformed(count, reason, now))
        if batch.poll_now:
            self.publish(PollNow(batch.poll_now))
        if batch.link_failure is not None:  # the latest attempt's outcome, for run.py status
            if batch.link_failure:
                self.publish(RecordError(LINK_ERROR[0], LINK_ERROR[1], batch.link_failure, time.time()))
            else:
                self.publish(ClearError(*LINK_ERROR))

    # -- from the other actors ----------------------------------------------------------------------------
    def on_ShadowDeltaApplied(self, msg: ShadowDeltaApplied) -> None:
        sync = self.syncs.get(msg.shadow_name) if msg.thing_name == self.thing_name else None
        if sync is not None:
            self._carry_out(sync, sync.on_applied(msg, time.monotonic()))

    def on_ReportQueued(self, msg: ReportQueued) -> None:
        sync = self.by_channel.get(msg.channel)  # other channels belong to other senders
        if sync is not None:
            self._carry_out(sync, sync.on_report_pending(msg.report_id, msg.patch, time.monotonic()))

    def on_StoreReopened(self, msg: StoreReopened) -> None:
        """Persistence restarted: each shadow takes its outbox from the store and reads the shadow again."""
        try:
            store = Store.open(self.config["store"]["path"], readonly=True)
        except StoreMissing:
            return
        with store:
            pending = {sync.channel: store.pending_report(sync.channel) for sync in self.syncs.values()}
        now = time.monotonic()
        for sync in self.syncs.values():
            self._carry_out(sync, sync.store_reopened(pending[sync.channel], now))

    # -- effects ------------------------------------------------------------------------------------------
    def _carry_out(self, sync: ShadowSync, effects: list) -> None:
        for effect in effects:
            try:
                self._carry_out_one(sync, effect)
            except (messages.MessageError, strict_json.JSONRefused) as exc:
                # Input is checked where it enters, so this is a value built here that no receiver could
                # read: recorded and skipped, never a crash (a crash would meet the same value again).
                reason = f"skipped {type(effect).__name__}: {exc}"[:500]
                self.log.error("%s", reason)
                self.publish(RecordError(sync.channel, "unencodable", reason.encode("utf-8", "replace").decode(),
                                         time.time()))

    def _count(self, name: str, incoming: object, now: float) -> None:
        """The figures of the shadow traffic: deltas received, reports answered and their round trip."""
        if isinstance(incoming, Delta):
            self.figures.count("fleetlet_shadow_deltas", shadow=name)
        elif isinstance(incoming, (Accepted, Rejected)) and incoming.client_token in self.reports_sent:
            sent = self.reports_sent.pop(incoming.client_token)
            self.figures.observe("fleetlet_shadow_roundtrip_seconds", now - sent, shadow=name)

    def _carry_out_one(self, sync: ShadowSync, effect: object) -> None:
        if isinstance(effect, Publish):
            self.link.publish(effect.topic, strict_json.encode(effect.payload))
            if effect.topic == sync.topics.update:  # a report (a read goes to get)
                self.figures.count("fleetlet_shadow_reports", shadow=sync.shadow_name)
                self.reports_sent = {token: at for token, at in self.reports_sent.items()
                                     if time.monotonic() - at < 60.0}  # unanswered ones are forgotten
                self.reports_sent[effect.payload.get("clientToken")] = time.monotonic()
        elif isinstance(effect, ReadOverHttp):
            self._read_over_http(sync.shadow_name, effect)
        else:
            if isinstance(effect, RecordError):  # the protocol's clock is monotonic; records carry wall time
                effect = dataclasses.replace(effect, at=time.time())
                self.log.warning("%s %s: %s", effect.source, effect.key, effect.message)
            self.publish(effect)
            if isinstance(effect, ShadowDeltaUpdated):
                self._call_functions(sync, effect)

    def _call_functions(self, sync: ShadowSync, delta: ShadowDeltaUpdated) -> None:
        for path, function in self.functions.items():
            try:
                reported, failures = function(delta)
                answer = ShadowDeltaApplied(path, delta.thing_name, delta.shadow_name, delta.version, reported,
                                            failures)
                messages.decode(messages.encode(answer))  # the same checks an actor's answer passes
            except Exception as exc:  # noqa: BLE001 - a handler's bug is recorded, never a listener crash
                effects = sync.on_handler_failed(path, delta.version, f"raised {type(exc).__name__}: {exc}",
                                                 time.monotonic())
            else:
                effects = sync.on_applied(answer, time.monotonic())
            self._carry_out(sync, effects)

    def _read_over_http(self, name: str, effect: ReadOverHttp) -> None:
        """The EMQX-profile read, in a thread of its own: a slow cloud must not block the actor."""
        client, inbox = self.cloud, self.inbox

        def read() -> None:
            incoming: Document | Rejected
            try:
                incoming = parse_emqx_view(client.emqx_shadow(effect.thing_name, ok=(200,)).json(), effect.client_token)
            except CloudError as exc:
                code = exc.status if exc.status is not None and 400 <= exc.status <= 599 else 503
                incoming = Rejected(code, str(exc)[:300], effect.client_token)
            except PayloadError as exc:
                incoming = Rejected(502, f"the cloud's shadow is unusable: {exc}", effect.client_token)
            inbox.put_response(name, incoming)

        threading.Thread(target=read, name="shadow-https-read", daemon=True).start()
