"""The cloud's shadow service over a real Mosquitto, on SQLite and on PostgreSQL: every request topic,
every answer topic, every rejection."""
from __future__ import annotations

import contextlib
import sqlite3

import pytest

from tests.support.cloud import MqttProbe

pytestmark = pytest.mark.broker

AWS = "$aws/things/lamp-1/shadow"
EMQX = "$emqx/things/lamp-1/shadow"
NAMED = "$aws/things/lamp-1/shadow/name/config"
ANSWERS = ("get/accepted", "get/rejected", "update/accepted", "update/rejected", "update/delta",
           "update/documents", "delete/accepted", "delete/rejected")


def answers(*prefixes: str) -> list[str]:
    return [f"{prefix}/{answer}" for prefix in prefixes for answer in ANSWERS]


@pytest.fixture(autouse=True)
def registered(cloud):
    """The things these tests use are registered devices: the cloud serves no other over MQTT."""
    cloud.register("lamp-1", "other")


def test_get_update_delete_of_a_classic_shadow_answer_as_aws_does(cloud, broker):
    with MqttProbe(broker.port) as probe:
        probe.subscribe(*answers(AWS))
        outcome, body = probe.call(f"{AWS}/get", {"clientToken": "g0"}, "g0")
        assert (outcome, body["code"], body["message"]) == ("rejected", 404, "No shadow exists with name: 'lamp-1'")

        outcome, accepted = probe.call(f"{AWS}/update", {"state": {"desired": {"color": "red", "level": 1}},
                                                          "clientToken": "u1"}, "u1")
        assert outcome == "accepted"
        assert accepted["state"] == {"desired": {"color": "red", "level": 1}}
        assert set(accepted["metadata"]["desired"]) == {"color", "level"}
        assert accepted["version"] == 1
        delta = probe.expect(f"{AWS}/update/delta")
        assert (delta["state"], delta["version"], delta["clientToken"]) == ({"color": "red", "level": 1}, 1, "u1")
        documents = probe.expect(f"{AWS}/update/documents")
        assert documents["previous"] == {"state": {}, "metadata": {}}
        assert documents["current"]["state"] == {"desired": {"color": "red", "level": 1}}
        assert (documents["current"]["version"], documents["clientToken"]) == (1, "u1")

        # The device reports what it applied: 1.0 equals 1, so nothing is left in the delta.
        outcome, accepted = probe.call(f"{AWS}/update", {"state": {"reported": {"color": "red", "level": 1.0}},
                                                          "clientToken": "u2"}, "u2")
        assert (outcome, accepted["version"]) == ("accepted", 2)
        assert probe.expect(f"{AWS}/update/documents")["current"]["version"] == 2
        assert probe.received(f"{AWS}/update/delta") == []

        outcome, document = probe.call(f"{AWS}/get", {"clientToken": "g1"}, "g1")
        assert outcome == "accepted"
        assert document["state"] == {"desired": {"color": "red", "level": 1},
                                     "reported": {"color": "red", "level": 1.0}}
        assert document["version"] == 2

        outcome, body = probe.call(f"{AWS}/update", {"state": {"desired": {"color": "blue"}}, "version": 1,
                                                      "clientToken": "u3"}, "u3")
        assert (outcome, body["code"], body["message"]) == ("rejected", 409, "Version conflict")

        outcome, deleted = probe.call(f"{AWS}/delete", {"clientToken": "d1"}, "d1")
        assert (outcome, deleted["version"], deleted["clientToken"]) == ("accepted", 2, "d1")
        assert probe.call(f"{AWS}/get", b"", None)[1]["code"] == 404
        assert probe.call(f"{AWS}/delete", b"", None)[1]["code"] == 404
        # A shadow created again continues from the deleted one's version.
        outcome, accepted = probe.call(f"{AWS}/update", {"state": {"reported": {"on": True}}, "clientToken": "u4"},
                                       "u4")
        assert (outcome, accepted["version"]) == ("accepted", 3)


def test_named_shadows_are_separate_and_both_profiles_see_the_classic_one(cloud, broker):
    with MqttProbe(broker.port) as probe:
        probe.subscribe(*answers(AWS, EMQX, NAMED))
        outcome, named = probe.call(f"{NAMED}/update", {"state": {"desired": {"rate": 5}}, "clientToken": "n1"}, "n1")
        assert (outcome, named["version"]) == ("accepted", 1)
        assert probe.expect(f"{NAMED}/update/delta")["state"] == {"rate": 5}
        assert probe.call(f"{AWS}/get", {"clientToken": "c0"}, "c0")[1]["code"] == 404  # the classic one is apart

        # An update on the EMQX profile changes the one classic shadow: AWS subscribers see it too.
        outcome, accepted = probe.call(f"{EMQX}/update", {"state": {"desired": {"mode": "eco"}}, "clientToken": "e1"},
                                       "e1")
        assert (outcome, accepted["version"]) == ("accepted", 1)
        for prefix in (AWS, EMQX):
            delta = probe.expect(f"{prefix}/update/delta")
            assert (delta["state"], delta["version"], delta["clientToken"]) == ({"mode": "eco"}, 1, "e1")
            assert probe.expect(f"{prefix}/update/documents")["current"]["version"] == 1
        assert probe.expect(f"{AWS}/update/accepted")["clientToken"] == "e1"
        outcome, document = probe.call(f"{EMQX}/get", {"clientToken": "e2"}, "e2")
        assert (outcome, document["state"]["delta"]) == ("accepted", {"mode": "eco"})
        assert probe.received(f"{AWS}/get/accepted") == []  # a get is answered to its asker only

        outcome, deleted = probe.call(f"{NAMED}/delete", {"clientToken": "n2"}, "n2")
        assert (outcome, deleted["version"]) == ("accepted", 1)
        assert probe.call(f"{NAMED}/get", {"clientToken": "n3"}, "n3")[1]["message"] == \
            "No shadow exists with name: 'config'"
        assert probe.call(f"{AWS}/get", {"clientToken": "c1"}, "c1")[1]["version"] == 1
        outcome, deleted = probe.call(f"{EMQX}/delete", {"clientToken": "e3"}, "e3")
        assert (outcome, deleted["version"]) == ("accepted", 1)
        assert probe.expect(f"{AWS}/delete/accepted")["clientToken"] == "e3"
        assert probe.call(f"{EMQX}/delete", {"clientToken": "e4"}, "e4")[1]["code"] == 404


BAD_UPDATES = [
    (b"{not json", 400, "Invalid JSON", None),
    (b"\xff\xfe", 415, "Unsupported documented encoding; supported encoding is UTF-8", None),
    (b'["state"]', 400, "Invalid JSON", None),
    (b'{"clientToken": "t1"}', 400, "Missing required node: state", "t1"),
    (b'{"state": {"delta": {"a": 1}}, "clientToken": "t2"}', 400, "State contains an invalid node", "t2"),
    (b'{"state": {"desired": [1]}, "clientToken": "t3"}', 400, "Desired node must be an object", "t3"),
    (b'{"state": {"desired": {"a": [1, null]}}, "clientToken": "t4"}', 400, "State contains an invalid node", "t4"),
    (b'{"state": {"desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}, "clientToken": "t5"}', 400,
     "JSON contains too many levels of nesting; maximum is 6", "t5"),
    (b'{"state": {"desired": {"a": 1}}, "clientToken": "' + b"x" * 65 + b'"}', 400, "Invalid clientToken", None),
    (b'{"state": {"desired": {"a": "' + b"x" * 8200 + b'"}}, "clientToken": "t6"}', 413,
     "The payload exceeds the maximum size allowed", "t6"),
    (b'{"state": {"desired": {"a": "' + b"x" * 140_000 + b'"}}}', 413, "The payload exceeds the maximum size allowed",
     None),
]


def test_malformed_requests_are_rejected_and_the_service_keeps_serving(cloud, broker):
    with MqttProbe(broker.port) as probe:
        probe.subscribe(*answers(AWS))
        for payload, code, message, token in BAD_UPDATES:
            outcome, body = probe.call(f"{AWS}/update", payload)
            assert (outcome, body.get("code"), body.get("message"), body.get("clientToken")) == \
                ("rejected", code, message, token), payload[:80]
            assert isinstance(body["timestamp"], int)
        assert probe.call(f"{AWS}/get", b"{oops")[1]["code"] == 400
        assert probe.call(f"{AWS}/delete", b'{"version": "one"}')[1]["message"] == "Invalid version"

        bad_name = "$aws/things/no.dots/shadow/update"
        long_name = f"$aws/things/{'n' * 129}/shadow/update"
        probe.subscribe(f"{bad_name}/rejected", f"{long_name}/rejected")
        for topic in (bad_name, long_name):
            probe.publish(topic, {"state": {"desired": {"a": 1}}})
            assert probe.expect(f"{topic}/rejected")["code"] == 400

        outcome, accepted = probe.call(f"{AWS}/update", {"state": {"desired": {"a": 1}}, "clientToken": "ok"}, "ok")
        assert (outcome, accepted["version"]) == ("accepted", 1)
        assert probe.received(f"{AWS}/update/accepted") == []  # nothing was accepted before


@contextlib.contextmanager
def writes_blocked(store_url: str):
    """Hold the store's write lock from outside the cloud: its shadow writes wait until we let go."""
    if store_url.startswith("sqlite:"):
        connection = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    import psycopg2

    connection = psycopg2.connect(store_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE shadow IN EXCLUSIVE MODE")  # reads go on, writes wait
            yield
        connection.rollback()
    finally:
        connection.close()


def test_more_than_ten_queued_requests_for_a_thing_get_429_and_the_rest_keep_their_order(cloud, broker, store_url):
    with MqttProbe(broker.port) as probe:
        probe.subscribe(*answers(AWS), "$aws/things/other/shadow/update/accepted")
        with writes_blocked(store_url):
            for number in range(15):
                probe.publish(f"{AWS}/update", {"state": {"reported": {"n": number}}, "clientToken": f"r{number}"})
            refused = [probe.expect(f"{AWS}/update/rejected") for _ in range(5)]
        assert sorted(body["clientToken"] for body in refused) == [f"r{n}" for n in range(10, 15)]
        assert {(body["code"], body["message"]) for body in refused} == {(429, "Too Many Requests")}
        accepted = [probe.expect(f"{AWS}/update/accepted", timeout=15) for _ in range(10)]
        assert [(body["clientToken"], body["version"]) for body in accepted] == [(f"r{n}", n + 1) for n in range(10)]
        # The queue is per thing, and it is empty again: the cloud answers on one connection, in order, so
        # a stray rejection would arrive before the other thing's answer.
        probe.publish("$aws/things/other/shadow/update", {"state": {"reported": {"n": 0}}})
        assert probe.expect("$aws/things/other/shadow/update/accepted")["version"] == 1
        assert probe.received(f"{AWS}/update/rejected") == []


def test_a_failing_store_costs_requests_a_500_and_the_service_goes_on(cloud, broker, store_url):
    with MqttProbe(broker.port) as probe:
        probe.subscribe(*answers(AWS))
        assert probe.call(f"{AWS}/update", {"state": {"reported": {"a": 1}}, "clientToken": "1"}, "1")[0] == "accepted"
        drop_shadow_table(store_url)
        outcome, body = probe.call(f"{AWS}/update", {"state": {"reported": {"a": 2}}, "clientToken": "2"}, "2")
        assert (outcome, body["code"], body["message"]) == ("rejected", 500, "Internal service failure")
        assert probe.call(f"{AWS}/get", {"clientToken": "3"}, "3")[1]["code"] == 500
    reply = cloud.client().get_shadow("lamp-1")
    assert (reply.status, reply.json()["code"]) == (500, 500)
    assert cloud.client().health().status == 200


def drop_shadow_table(store_url: str) -> None:
    if store_url.startswith("sqlite:"):
        connection = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
    else:
        import psycopg2

        connection = psycopg2.connect(store_url)
        connection.autocommit = True
    try:
        connection.cursor().execute("DROP TABLE shadow")
    finally:
        connection.close()
