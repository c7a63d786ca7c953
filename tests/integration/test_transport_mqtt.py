"""The one MQTT link's flow control (messages.transport.mqtt): a window of QoS 1 publishes in flight, a bounded
outbox, and a lost connection's unacknowledged publishes sent again. First against a fake gmqtt client,
then against a real Mosquitto."""
from __future__ import annotations

import asyncio
import threading

from hypothesis import given
from hypothesis import strategies as st

from messages.transport.mqtt import LinkSettings, MqttLink, _InFlight
from tests.support.polling import wait_for


class FakeClient:
    """Stores each publish in the in-flight store as gmqtt does; raises OverflowError past ``receive_maximum``."""

    def __init__(self, in_flight: _InFlight, receive_maximum: int = 65535):
        self.in_flight, self.receive_maximum, self.next_mid = in_flight, receive_maximum, 0
        self.wire: list[bytes] = []

    def publish(self, topic, payload, qos):
        assert qos == 1
        if len(self.in_flight.get_all()) >= self.receive_maximum:
            raise OverflowError("no packet id left")
        self.next_mid += 1
        self.in_flight.push_message(self.next_mid, b"packet")
        self.wire.append(payload)

    def puback(self) -> None:
        self.in_flight.remove_message_by_mid(self.in_flight.get_all()[0][0])

    async def disconnect(self):
        pass


def new_link(window=3, limit=10) -> MqttLink:
    return MqttLink(LinkSettings("127.0.0.1", 1, "dev", publish_window=window, outbox_limit=limit), ["t"],
                    lambda topic, payload: None)


def connect(link: MqttLink, receive_maximum: int = 65535) -> FakeClient:
    in_flight = _InFlight(link._drain)
    client = FakeClient(in_flight, receive_maximum)
    link._client, link._in_flight, link.ready = client, in_flight, True
    link._drain()
    return client


def lose(link: MqttLink) -> None:
    link.ready = False
    asyncio.run(link._close(link._client))


def test_publishes_wait_for_a_connection_then_leave_within_the_window_as_pubacks_come():
    link = new_link(window=3)
    for n in range(5):
        link.publish("t", b"%d" % n)
    client = connect(link)
    assert client.wire == [b"0", b"1", b"2"]
    client.puback()
    assert client.wire == [b"0", b"1", b"2", b"3"]


def test_a_lost_connection_s_unacknowledged_publishes_go_first_on_the_next_one():
    link = new_link(window=2)
    for n in range(4):
        link.publish("t", b"%d" % n)
    first = connect(link)
    first.puback()  # 0 acknowledged; 1 and 2 in flight
    lose(link)
    assert connect(link).wire == [b"1", b"2"]


def test_the_outbox_drops_its_oldest_when_full_and_counts_them():
    link = new_link(window=1, limit=2)
    for n in range(5):
        link.publish("t", b"%d" % n)
    assert link.dropped == 3 and connect(link).wire == [b"3"]


def test_a_broker_receive_maximum_below_the_window_defers_instead_of_failing():
    link = new_link(window=5)
    for n in range(4):
        link.publish("t", b"%d" % n)
    client = connect(link, receive_maximum=2)
    assert client.wire == [b"0", b"1"]
    client.puback()
    assert client.wire == [b"0", b"1", b"2"]


operations = st.lists(st.sampled_from(["publish", "publish", "publish", "puback", "lose", "connect"]), max_size=80)


@given(operations, st.integers(1, 5), st.integers(1, 8))
def test_nothing_is_lost_uncounted_and_the_window_holds(ops, window, limit):
    link, client, sent, acked = new_link(window, limit), None, 0, []
    for op in ops:
        if op == "publish":
            link.publish("t", b"%d" % sent)
            sent += 1
        elif op == "puback" and client is not None and client.in_flight.get_all():
            acked.append(client.wire[len(client.wire) - len(client.in_flight.get_all())])
            client.puback()
        elif op == "lose" and client is not None:
            lose(link)
            client = None
        elif op == "connect" and client is None:
            client = connect(link)
        in_flight = [] if client is None else client.wire[len(client.wire) - len(client.in_flight.get_all()):]
        assert len(in_flight) <= window
        waiting = [payload for _, payload in link._outbox]
        assert len(waiting) <= limit
        # every publish is acknowledged, in flight, waiting, or counted as dropped: at least once, never silently
        assert len(set(acked) | set(in_flight) | set(waiting)) + link.dropped >= sent
        assert sorted(set(in_flight) | set(waiting), key=int) == in_flight + waiting  # order is kept


def test_a_burst_far_over_mosquittos_receive_maximum_arrives_whole_and_in_order(plain_broker):
    broker = plain_broker  # flow control is MQTT's, whatever carries it
    received, lock = [], threading.Lock()

    def keep(topic, payload):
        with lock:
            received.append(payload)

    sender = MqttLink(LinkSettings("127.0.0.1", broker.port, "sender", keepalive=5, publish_window=16), ["unused"],
                      lambda topic, payload: None)
    receiver = MqttLink(LinkSettings("127.0.0.1", broker.port, "receiver", keepalive=5), ["burst"], keep)
    for link in (sender, receiver):
        link.start()
    try:
        wait_for(lambda: sender.ready and receiver.ready, what="both links up")
        for n in range(500):
            sender.publish("burst", b"%d" % n)
        wait_for(lambda: len(received) >= 500, what="the whole burst")
        assert received == [b"%d" % n for n in range(500)] and sender.dropped == 0
    finally:
        for link in (sender, receiver):
            link.stop()
