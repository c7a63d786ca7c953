"""Mutual TLS and the broker's ACL, against a real Mosquitto configured by cloud.pki (as deployed): a device
touches only its own topics, a certificate from another CA gets nowhere, the link says which certificate it
refused and why, the broker honours the link's maximum packet size, and the cloud ignores unregistered things."""
from __future__ import annotations

import json
import pathlib
import threading

import pytest
from cryptography import x509

from cloud import pki as cloud_pki
from messages.transport.mqtt import LinkSettings, MqttLink
from messages.transport.tls import TlsSettings
from tests.support.cloud import MqttProbe
from tests.support.polling import wait_for, wait_quiet

pytestmark = pytest.mark.broker


class Seen:
    def __init__(self):
        self.messages, self.failures = [], []
        self.lock = threading.Lock()

    def message(self, topic, payload):
        with self.lock:
            self.messages.append((topic, payload))

    def failure(self, reason):
        with self.lock:
            self.failures.append(reason)

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


@pytest.fixture
def links():
    started = []

    def start(port, client_id, tls, topics, seen, **options) -> MqttLink:
        link = MqttLink(LinkSettings("127.0.0.1", port, client_id, keepalive=5, reconnect_min=0.05,
                                     reconnect_max=0.3, tls=tls, **options), topics, seen.message,
                        on_failure=seen.failure)
        started.append(link)
        link.start()
        return link

    yield start
    for link in started:
        link.stop()


@pytest.fixture
def other_ca(tmp_path):
    """A second CA, and a device certificate it issued for thing lamp-a (the name another device holds)."""
    directory = tmp_path / "other-ca"
    cloud_pki.init(directory)
    cloud_pki.issue_device(directory, "lamp-a")
    return directory


def test_device_b_can_neither_read_nor_write_device_a_topics(broker, pki, links):
    a, b, cloud = Seen(), Seen(), Seen()
    topics_a = ["$aws/things/lamp-a/shadow/update/delta", "fleetlet/devices/lamp-a/poll-now"]
    link_a = links(broker.port, "lamp-a", pki.device_tls("lamp-a"), topics_a, a)
    # B subscribes to A's topics (Mosquitto grants the subscription, and then delivers nothing the ACL denies)
    link_b = links(broker.port, "lamp-b", pki.device_tls("lamp-b"), [*topics_a, "$aws/things/lamp-a/shadow/update"],
                   b)
    server = links(broker.port, "cloud", pki.tls("cloud"), ["$aws/things/+/shadow/update"], cloud)
    wait_for(lambda: link_a.ready and link_b.ready and server.ready, what="three links up")
    server.publish("$aws/things/lamp-a/shadow/update/delta", b'{"version": 1, "state": {"on": true}}')
    server.publish("fleetlet/devices/lamp-a/poll-now", b"{}")
    link_b.publish("$aws/things/lamp-a/shadow/update/delta", b'{"version": 99, "state": {"forged": 1}}')
    link_b.publish("$aws/things/lamp-a/shadow/update", b'{"state": {"reported": {"forged": 1}}}')
    link_a.publish("$aws/things/lamp-a/shadow/update", b'{"state": {"reported": {"on": true}}}')
    wait_for(lambda: a.count() == 2 and cloud.count() == 1, what="what A and the cloud may see")
    wait_quiet(lambda: a.count() + b.count() + cloud.count(), quiet=0.5, what="nothing more arriving")
    assert sorted(a.messages) == sorted([("$aws/things/lamp-a/shadow/update/delta",
                                          b'{"version": 1, "state": {"on": true}}'),
                                         ("fleetlet/devices/lamp-a/poll-now", b"{}")])  # not B's forged delta
    assert cloud.messages == [("$aws/things/lamp-a/shadow/update", b'{"state": {"reported": {"on": true}}}')]
    assert b.messages == []  # neither A's delta nor A's own report, nor A's poll-now


def test_one_certificate_holds_one_session_whatever_client_id_is_claimed(broker, pki, links):
    """The client id is the certificate's CN: B cannot take over A's persistent session by claiming its id."""
    a, b = Seen(), Seen()
    link_a = links(broker.port, "lamp-a", pki.device_tls("lamp-a"), ["$aws/things/lamp-a/shadow/update/delta"], a)
    wait_for(lambda: link_a.ready, what="A up")
    link_b = links(broker.port, "lamp-a", pki.device_tls("lamp-b"), ["$aws/things/lamp-b/shadow/update/delta"], b)
    wait_for(lambda: link_b.ready, what="B up")
    wait_quiet(lambda: link_a.connections, quiet=0.5, what="A staying connected")
    assert link_a.ready and link_a.connections == 1  # B's connection did not end A's


def test_a_client_certificate_from_another_ca_gets_no_connection(broker, pki, other_ca, links):
    seen = Seen()
    rogue = TlsSettings(pki.ca, str(other_ca / "lamp-a.crt"), str(other_ca / "lamp-a.key"))
    link = links(broker.port, "lamp-a", rogue, ["$aws/things/lamp-a/shadow/update/delta"], seen)
    wait_for(lambda: len(seen.failures) >= 2, what="two refused attempts")  # and it keeps retrying
    assert not link.ready and link.connections == 0


def test_the_link_refuses_a_broker_another_ca_signed_and_says_which_certificate_and_which_check(
        broker, pki, other_ca, links):
    seen = Seen()
    cert, key = pki.device("lamp-a")
    link = links(broker.port, "lamp-a", TlsSettings(str(other_ca / "ca.crt"), cert, key),
                 ["$aws/things/lamp-a/shadow/update/delta"], seen)
    wait_for(lambda: len(seen.failures) >= 2, what="two refused attempts, backing off")
    assert not link.ready and link.connections == 0
    issuer = x509.load_pem_x509_certificate(pathlib.Path(pki.ca).read_bytes()).subject.rfc4514_string()
    # Mosquitto sends its CA along with its certificate (OpenSSL builds the chain from its cafile): the check
    # that fails is then the untrusted root's, not a missing issuer's
    assert seen.failures[0] == (
        f"certificate verify failed: self-signed certificate in certificate chain for broker 127.0.0.1:{broker.port}"
        f" (subject CN=localhost,OU=server, issuer {issuer})")
    assert link.last_failure == seen.failures[-1]


def test_the_broker_drops_what_exceeds_the_links_maximum_packet_size(broker, pki, links):
    seen, cloud = Seen(), Seen()
    topic = "$aws/things/lamp-a/shadow/update/delta"
    link = links(broker.port, "lamp-a", pki.device_tls("lamp-a"), [topic], seen, max_packet_size=2048)
    server = links(broker.port, "cloud", pki.tls("cloud"), ["fleetlet/devices/none/x"], cloud)
    wait_for(lambda: link.ready and server.ready, what="both up")
    server.publish(topic, json.dumps({"version": 1, "state": {"big": "x" * 4000}}).encode())
    server.publish(topic, b'{"version": 2, "state": {}}')
    wait_for(lambda: seen.count() == 1, what="the small message")
    assert seen.messages == [(topic, b'{"version": 2, "state": {}}')] and link.ready


def test_the_cloud_ignores_a_request_for_a_thing_no_device_registered(cloud, broker):
    cloud.register("lamp-a")
    ghost, known = "$aws/things/ghost-1/shadow", "$aws/things/lamp-a/shadow"
    with MqttProbe(broker.port) as probe:
        probe.subscribe(f"{ghost}/update/accepted", f"{ghost}/update/rejected", f"{ghost}/get/rejected",
                        f"{known}/update/accepted")
        probe.publish(f"{ghost}/update", {"state": {"desired": {"on": True}}, "clientToken": "g1"})
        probe.publish(f"{ghost}/get", {"clientToken": "g2"})
        probe.publish(f"{ghost}/update", b"not json")
        probe.publish(f"{known}/update", {"state": {"desired": {"on": True}}, "clientToken": "k1"})
        assert probe.expect(f"{known}/update/accepted")["clientToken"] == "k1"
        wait_quiet(lambda: sum(len(probe.received(f"{ghost}/{answer}"))
                               for answer in ("update/accepted", "update/rejected", "get/rejected")),
                   quiet=0.5, what="answers about the ghost")
        for answer in ("update/accepted", "update/rejected", "get/rejected"):
            assert probe.received(f"{ghost}/{answer}") == []
    assert cloud.client().get_shadow("ghost-1").status == 404  # no shadow was created
    assert "ignored aws update for ghost-1: no registered device" in cloud.log()
