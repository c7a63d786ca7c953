"""The listener's MQTT link (real Mosquitto) and the inbox between its thread and the actor."""
from __future__ import annotations

import json
import threading

import pytest

from actors.shadow.inbox import POLL_NOW_REASON, Inbox
from actors.shadow.payloads import Accepted, Delta, PayloadLimits
from messages.protocol.shadow_topics import shadow_topics
from messages.transport.mqtt import LinkSettings, MqttLink
from tests.support.pki import session_pki
from tests.support.polling import wait_for

TOPICS = shadow_topics("aws", "dev")


class Recorder:
    def __init__(self):
        self.messages, self.states = [], []
        self.lock = threading.Lock()

    def message(self, topic, payload):
        with self.lock:
            self.messages.append((topic, payload))

    def state(self, ready):
        with self.lock:
            self.states.append(ready)


def link(port, recorder, client_id="dev", protocol=5, topics=(TOPICS.update_delta,), **changes) -> MqttLink:
    """The device "dev" with its own certificate, or a peer serving it as the cloud does (a probe identity)."""
    pki = session_pki()
    tls = pki.device_tls("dev") if client_id == "dev" else pki.tls(pki.next_probe())
    settings = LinkSettings("127.0.0.1", port, client_id, protocol=protocol, keepalive=5,
                            reconnect_min=0.05, reconnect_max=0.4, tls=tls, **changes)
    return MqttLink(settings, topics, recorder.message, recorder.state)


@pytest.fixture
def links():
    started = []

    def start(*args, **kwargs) -> MqttLink:
        started.append(link(*args, **kwargs))
        started[-1].start()
        return started[-1]

    yield start
    for item in started:
        item.stop()


@pytest.mark.parametrize("protocol", [4, 5])
def test_up_only_once_subscribed_and_messages_flow_both_ways(broker, links, protocol):
    device, peer = Recorder(), Recorder()
    device_link = links(broker.port, device, protocol=protocol)
    peer_link = links(broker.port, peer, client_id="peer", topics=(TOPICS.update,))
    wait_for(lambda: device_link.ready and peer_link.ready, what="both links up")
    assert device.states == [True]
    peer_link.publish(TOPICS.update_delta, b'{"version": 1, "state": {"a": 1}}')
    device_link.publish(TOPICS.update, b'{"state": {"reported": {"a": 1}}}')
    wait_for(lambda: device.messages and peer.messages, what="messages both ways")
    assert device.messages == [(TOPICS.update_delta, b'{"version": 1, "state": {"a": 1}}')]
    assert peer.messages == [(TOPICS.update, b'{"state": {"reported": {"a": 1}}}')]


@pytest.mark.parametrize("protocol", [4, 5])
def test_the_broker_queues_what_arrives_while_the_device_is_away(broker, links, protocol):
    device, peer = Recorder(), Recorder()
    first = links(broker.port, device, protocol=protocol)
    peer_link = links(broker.port, peer, client_id="peer", topics=("unused/topic",))
    wait_for(lambda: first.ready and peer_link.ready, what="links up")
    first.stop()
    for version in (1, 2, 3):
        peer_link.publish(TOPICS.update_delta, json.dumps({"version": version, "state": {}}).encode())
    again = links(broker.port, device, protocol=protocol)  # same client id: the persistent session
    wait_for(lambda: len(device.messages) == 3, what="the queued deltas")
    assert [json.loads(payload)["version"] for _, payload in device.messages] == [1, 2, 3]
    assert again.ready


def test_reconnects_and_resubscribes_after_a_broker_restart(broker, links):
    device, peer = Recorder(), Recorder()
    device_link = links(broker.port, device)
    wait_for(lambda: device_link.ready, what="link up")
    broker.stop()
    wait_for(lambda: not device_link.ready, what="link down")
    broker.start()  # same port, no persistence: the session is gone, so the link must subscribe again
    wait_for(lambda: device_link.ready, timeout=10, what="link up again")
    assert device.states == [True, False, True] and device_link.connections == 2
    peer_link = links(broker.port, peer, client_id="peer", topics=("unused/topic",))
    wait_for(lambda: peer_link.ready, what="peer up")
    peer_link.publish(TOPICS.update_delta, b"{}")
    wait_for(lambda: device.messages, what="a message after the restart")


def test_the_first_connection_is_retried_until_the_broker_comes(broker, links):
    broker.stop()
    device = Recorder()
    device_link = links(broker.port, device)
    threading.Event().wait(0.5)
    assert not device_link.ready
    broker.start()
    wait_for(lambda: device_link.ready, timeout=10, what="link up once the broker is there")


# -- the inbox ------------------------------------------------------------------------------------------------

class Bell:
    def __init__(self):
        self.rings = 0

    def __call__(self):
        self.rings += 1


def inbox(bell) -> Inbox:
    return Inbox("dev", "aws", ["", "net"], "tok-", PayloadLimits(max_bytes=1024, max_depth=8), "uuid-1", bell)


def test_inbox_keeps_the_newest_delta_our_answers_and_rings_once_until_taken():
    bell = Bell()
    box = inbox(bell)
    for version in (3, 9, 4):
        box.receive(TOPICS.update_delta, json.dumps({"version": version, "state": {"v": version}}).encode())
    box.receive(TOPICS.update_accepted, b'{"version": 10, "clientToken": "tok-0-1"}')
    box.receive(TOPICS.update_accepted, b'{"version": 11, "clientToken": "someone-else"}')
    box.receive(TOPICS.update_accepted, b'{"version": 12}')
    box.receive("fleetlet/devices/uuid-1/poll-now", b'{"uuid": "uuid-1", "etag": "x"}')
    assert bell.rings == 1
    batch = box.take()
    assert batch.deltas == (("", Delta(9, {"v": 9})),)
    assert batch.responses == (("", Accepted(10, "tok-0-1")),)
    assert batch.poll_now == POLL_NOW_REASON
    box.receive(shadow_topics("aws", "dev", "net").update_delta, b'{"version": 1, "state": {}}')
    assert bell.rings == 2
    assert box.take().deltas == (("net", Delta(1, {})),)


def test_inbox_counts_malformed_input_per_shadow_with_the_last_reason():
    bell = Bell()
    box = inbox(bell)
    for payload in (b"not json", b"[]", b"x" * 2000, b'{"version": 1, "state": ' + b"[" * 20 + b"]" * 20 + b"}"):
        box.receive(TOPICS.update_delta, payload)
    box.receive("some/other/topic", b"ignored")
    (name, count, reason), = box.take().malformed
    assert (name, count) == ("", 4) and "nested deeper" in reason and TOPICS.update_delta in reason


def test_inbox_subscribes_to_each_needed_topic_and_the_poll_now_notice():
    box = inbox(Bell())
    assert len(box.topics) == 2 * 5 + 1
    assert "fleetlet/devices/uuid-1/poll-now" in box.topics
    assert not any(topic.endswith("#") for topic in box.topics)


def test_inbox_link_changes_count_connections():
    box = inbox(Bell())
    box.link_changed(True)
    box.link_changed(False)
    box.link_changed(True)
    batch = box.take()
    assert (batch.epoch, batch.ready) == (2, True)


def test_a_flood_costs_one_doorbell_and_one_kept_delta():
    bell = Bell()
    box = inbox(bell)
    for version in range(5000):
        box.receive(TOPICS.update_delta, json.dumps({"version": version, "state": {"v": version}}).encode())
    assert bell.rings == 1
    assert box.take().deltas == (("", Delta(4999, {"v": 4999})),)
