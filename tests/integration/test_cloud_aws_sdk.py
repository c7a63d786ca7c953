"""AWS's own device SDK (awsiotsdk v2 on awscrt) against the cloud, unchanged, on SQLite and on PostgreSQL.

The shadow clients only understand what AWS IoT sends: a wrong field name leaves a model attribute None,
a payload the SDK cannot read (a wrong type, milliseconds for seconds) reaches a V1 callback as None, and
a missing correlation token times a V2 request out. The connections are made with the SDK's own builders, as a
device does: mutual TLS with the device's certificate (CN = its thing name) to the test's Mosquitto and its ACL.
"""
from __future__ import annotations

import contextlib
import datetime
import queue
import time
import uuid

import pytest

from tests.support.pki import session_pki
from tests.support.services import missing

try:
    from awscrt import mqtt, mqtt_request_response
    from awsiot import (
        ServiceStreamOptions,
        V2ServiceException,
        iotshadow,
        mqtt5_client_builder,
        mqtt_connection_builder,
    )
except ImportError:
    iotshadow = None

pytestmark = pytest.mark.broker

TIMEOUT = 5.0


@pytest.fixture
def sdk():
    """First in a test's arguments: without the SDK, skip (fail under CI) before starting anything."""
    if iotshadow is None:
        missing("awsiotsdk (pip install awsiotsdk)")


def unique_thing(cloud) -> str:
    """A thing registered on the cloud (it serves no other over MQTT), with a device certificate of its own."""
    thing = f"sdk-lamp-{uuid.uuid4().hex[:8]}"
    cloud.register(thing)
    session_pki().device(thing)
    return thing


def _identity(thing: str) -> dict:
    cert, key = session_pki().device(thing)
    return {"endpoint": "127.0.0.1", "cert_filepath": cert, "pri_key_filepath": key, "ca_filepath": session_pki().ca,
            "enable_metrics_collection": False}


@contextlib.contextmanager
def mqtt311_connection(port: int, thing: str):
    """An MQTT 3.1.1 connection over mutual TLS as the device ``thing``, connected; disconnected on exit."""
    connection = mqtt_connection_builder.mtls_from_path(port=port, client_id=thing, keep_alive_secs=30,
                                                         **_identity(thing))
    connection.connect().result(TIMEOUT)
    try:
        yield connection
    finally:
        connection.disconnect().result(TIMEOUT)


@contextlib.contextmanager
def mqtt5_client(port: int, thing: str):
    """An MQTT 5 client over mutual TLS as the device ``thing``, connected; stopped on exit."""
    connected, stopped = Inbox(), Inbox()
    client = mqtt5_client_builder.mtls_from_path(
        port=port, client_id=thing, keep_alive_interval_sec=30,
        on_lifecycle_connection_success=connected, on_lifecycle_stopped=stopped, **_identity(thing))
    client.start()
    connected.next()
    try:
        yield client
    finally:
        client.stop()
        stopped.next()


class Inbox:
    """A callback that queues what the SDK hands it: ``next()`` takes the oldest, waiting for it."""

    def __init__(self):
        self._events = queue.Queue()

    def __call__(self, event) -> None:
        self._events.put(event)

    def next(self, timeout: float = TIMEOUT):
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the SDK delivered nothing within {timeout} s") from None
        assert event is not None, "the SDK could not parse the payload into its model class"
        return event

    def empty(self) -> bool:
        return self._events.empty()


def subscribe(operation, request) -> Inbox:
    """Subscribe with one of IotShadowClient's ``subscribe_to_*`` methods and wait for the SUBACK."""
    inbox = Inbox()
    subscribed, _ = operation(request, mqtt.QoS.AT_LEAST_ONCE, inbox)
    assert subscribed.result(TIMEOUT) == mqtt.QoS.AT_LEAST_ONCE
    return inbox


def publish(operation, request) -> None:
    operation(request, mqtt.QoS.AT_LEAST_ONCE).result(TIMEOUT)


def assert_recent(moment: datetime.datetime) -> None:
    """The SDK read the timestamp as epoch seconds (milliseconds would not even parse)."""
    assert abs(moment.timestamp() - time.time()) < 60


def assert_timestamped(metadata: dict, fields: set[str]) -> None:
    assert set(metadata) == fields
    for field in fields:
        assert set(metadata[field]) == {"timestamp"}
        assert isinstance(metadata[field]["timestamp"], int)


def test_the_v1_shadow_client_drives_a_classic_shadow_through_its_whole_life(sdk, cloud, broker):
    thing = unique_thing(cloud)
    with mqtt311_connection(broker.port, thing) as connection:
        shadow = iotshadow.IotShadowClient(connection)
        topics = iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing)
        update_accepted = subscribe(shadow.subscribe_to_update_shadow_accepted, topics)
        update_rejected = subscribe(shadow.subscribe_to_update_shadow_rejected, topics)
        deltas = subscribe(shadow.subscribe_to_shadow_delta_updated_events,
                           iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=thing))
        documents = subscribe(shadow.subscribe_to_shadow_updated_events,
                              iotshadow.ShadowUpdatedSubscriptionRequest(thing_name=thing))
        get_topics = iotshadow.GetShadowSubscriptionRequest(thing_name=thing)
        get_accepted = subscribe(shadow.subscribe_to_get_shadow_accepted, get_topics)
        get_rejected = subscribe(shadow.subscribe_to_get_shadow_rejected, get_topics)
        delete_topics = iotshadow.DeleteShadowSubscriptionRequest(thing_name=thing)
        delete_accepted = subscribe(shadow.subscribe_to_delete_shadow_accepted, delete_topics)
        delete_rejected = subscribe(shadow.subscribe_to_delete_shadow_rejected, delete_topics)

        publish(shadow.publish_get_shadow, iotshadow.GetShadowRequest(thing_name=thing, client_token="g0"))
        missing_shadow = get_rejected.next()
        assert isinstance(missing_shadow, iotshadow.ErrorResponse)
        assert (missing_shadow.code, missing_shadow.message, missing_shadow.client_token) == \
            (404, f"No shadow exists with name: '{thing}'", "g0")
        assert_recent(missing_shadow.timestamp)

        publish(shadow.publish_update_shadow, iotshadow.UpdateShadowRequest(
            thing_name=thing, client_token="u1", state=iotshadow.ShadowState(desired={"color": "red", "level": 1})))
        accepted = update_accepted.next()
        assert isinstance(accepted, iotshadow.UpdateShadowResponse)
        assert (accepted.version, accepted.client_token) == (1, "u1")
        assert (accepted.state.desired, accepted.state.reported) == ({"color": "red", "level": 1}, None)
        assert_timestamped(accepted.metadata.desired, {"color", "level"})
        assert accepted.metadata.reported is None
        assert_recent(accepted.timestamp)
        delta = deltas.next()
        assert isinstance(delta, iotshadow.ShadowDeltaUpdatedEvent)
        assert (delta.state, delta.version, delta.client_token) == ({"color": "red", "level": 1}, 1, "u1")
        assert_timestamped(delta.metadata, {"color", "level"})
        assert_recent(delta.timestamp)
        updated = documents.next()
        assert isinstance(updated, iotshadow.ShadowUpdatedEvent)
        assert (updated.current.state.desired, updated.current.version) == ({"color": "red", "level": 1}, 1)

        # The device reports what it applied, guarded by the version it saw: nothing is left to do.
        publish(shadow.publish_update_shadow, iotshadow.UpdateShadowRequest(
            thing_name=thing, client_token="u2", version=delta.version,
            state=iotshadow.ShadowState(reported=delta.state)))
        accepted = update_accepted.next()
        assert (accepted.version, accepted.client_token, accepted.state.reported) == \
            (2, "u2", {"color": "red", "level": 1})
        updated = documents.next()
        assert (updated.previous.version, updated.current.version) == (1, 2)
        assert updated.current.state.reported == {"color": "red", "level": 1}

        publish(shadow.publish_get_shadow, iotshadow.GetShadowRequest(thing_name=thing, client_token="g1"))
        document = get_accepted.next()
        assert isinstance(document, iotshadow.GetShadowResponse)
        assert (document.version, document.client_token) == (2, "g1")
        assert document.state.desired == document.state.reported == {"color": "red", "level": 1}
        assert document.state.delta is None
        assert_timestamped(document.metadata.desired, {"color", "level"})
        assert_timestamped(document.metadata.reported, {"color", "level"})

        publish(shadow.publish_update_shadow, iotshadow.UpdateShadowRequest(
            thing_name=thing, client_token="u3", version=1, state=iotshadow.ShadowState(reported={"color": "off"})))
        conflict = update_rejected.next()
        assert isinstance(conflict, iotshadow.ErrorResponse)
        assert (conflict.code, conflict.message, conflict.client_token) == (409, "Version conflict", "u3")

        # A new wish and, in the same update, the whole reported section cleared (null, as the SDK allows).
        publish(shadow.publish_update_shadow, iotshadow.UpdateShadowRequest(
            thing_name=thing, client_token="u4", state=iotshadow.ShadowState(
                desired={"color": "blue"}, reported=None, reported_is_nullable=True)))
        accepted = update_accepted.next()
        assert (accepted.version, accepted.state.desired, accepted.state.reported) == (3, {"color": "blue"}, None)
        assert accepted.state.reported_is_nullable  # the SDK saw "reported": null echoed back
        delta = deltas.next()
        assert (delta.state, delta.version) == ({"color": "blue", "level": 1}, 3)
        publish(shadow.publish_get_shadow, iotshadow.GetShadowRequest(thing_name=thing, client_token="g2"))
        document = get_accepted.next()
        assert (document.state.desired, document.state.reported) == ({"color": "blue", "level": 1}, None)
        assert document.state.delta == {"color": "blue", "level": 1}

        publish(shadow.publish_delete_shadow, iotshadow.DeleteShadowRequest(thing_name=thing, client_token="d1"))
        deleted = delete_accepted.next()
        assert isinstance(deleted, iotshadow.DeleteShadowResponse)
        assert (deleted.version, deleted.client_token) == (3, "d1")
        assert_recent(deleted.timestamp)
        publish(shadow.publish_get_shadow, iotshadow.GetShadowRequest(thing_name=thing, client_token="g3"))
        assert get_rejected.next().code == 404
        publish(shadow.publish_delete_shadow, iotshadow.DeleteShadowRequest(thing_name=thing, client_token="d2"))
        gone = delete_rejected.next()
        assert (gone.code, gone.client_token) == (404, "d2")
        assert update_rejected.empty() and deltas.empty()


def test_the_v1_shadow_client_keeps_a_named_shadow_apart_from_the_classic_one(sdk, cloud, broker):
    thing, name = unique_thing(cloud), "config"
    with mqtt311_connection(broker.port, thing) as connection:
        shadow = iotshadow.IotShadowClient(connection)
        update_topics = iotshadow.UpdateNamedShadowSubscriptionRequest(thing_name=thing, shadow_name=name)
        update_accepted = subscribe(shadow.subscribe_to_update_named_shadow_accepted, update_topics)
        update_rejected = subscribe(shadow.subscribe_to_update_named_shadow_rejected, update_topics)
        deltas = subscribe(shadow.subscribe_to_named_shadow_delta_updated_events,
                           iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(thing_name=thing, shadow_name=name))
        get_topics = iotshadow.GetNamedShadowSubscriptionRequest(thing_name=thing, shadow_name=name)
        get_accepted = subscribe(shadow.subscribe_to_get_named_shadow_accepted, get_topics)
        get_rejected = subscribe(shadow.subscribe_to_get_named_shadow_rejected, get_topics)
        delete_accepted = subscribe(shadow.subscribe_to_delete_named_shadow_accepted,
                                    iotshadow.DeleteNamedShadowSubscriptionRequest(thing_name=thing, shadow_name=name))
        classic_rejected = subscribe(shadow.subscribe_to_get_shadow_rejected,
                                     iotshadow.GetShadowSubscriptionRequest(thing_name=thing))

        publish(shadow.publish_get_named_shadow,
                iotshadow.GetNamedShadowRequest(thing_name=thing, shadow_name=name, client_token="n0"))
        absent = get_rejected.next()
        assert (absent.code, absent.message, absent.client_token) == (404, f"No shadow exists with name: '{name}'",
                                                                      "n0")

        publish(shadow.publish_update_named_shadow, iotshadow.UpdateNamedShadowRequest(
            thing_name=thing, shadow_name=name, client_token="n1",
            state=iotshadow.ShadowState(desired={"rate": 5}, reported={"rate": 1})))
        accepted = update_accepted.next()
        assert (accepted.version, accepted.client_token) == (1, "n1")
        assert (accepted.state.desired, accepted.state.reported) == ({"rate": 5}, {"rate": 1})
        assert_timestamped(accepted.metadata.reported, {"rate"})
        delta = deltas.next()
        assert (delta.state, delta.version, delta.client_token) == ({"rate": 5}, 1, "n1")

        publish(shadow.publish_update_named_shadow, iotshadow.UpdateNamedShadowRequest(
            thing_name=thing, shadow_name=name, client_token="n2", version=7,
            state=iotshadow.ShadowState(reported={"rate": 5})))
        conflict = update_rejected.next()
        assert (conflict.code, conflict.message, conflict.client_token) == (409, "Version conflict", "n2")

        publish(shadow.publish_get_named_shadow,
                iotshadow.GetNamedShadowRequest(thing_name=thing, shadow_name=name, client_token="n3"))
        document = get_accepted.next()
        assert (document.version, document.client_token, document.state.delta) == (1, "n3", {"rate": 5})
        publish(shadow.publish_get_shadow, iotshadow.GetShadowRequest(thing_name=thing, client_token="c0"))
        assert classic_rejected.next().message == f"No shadow exists with name: '{thing}'"

        publish(shadow.publish_delete_named_shadow,
                iotshadow.DeleteNamedShadowRequest(thing_name=thing, shadow_name=name, client_token="n4"))
        deleted = delete_accepted.next()
        assert (deleted.version, deleted.client_token) == (1, "n4")
        publish(shadow.publish_get_named_shadow,
                iotshadow.GetNamedShadowRequest(thing_name=thing, shadow_name=name, client_token="n5"))
        assert get_rejected.next().code == 404
        assert get_accepted.empty()


def test_a_wish_made_over_http_reaches_the_v1_client_as_a_delta_and_its_report_settles_it(sdk, cloud, broker):
    thing = unique_thing(cloud)
    operator = cloud.client()
    with mqtt311_connection(broker.port, thing) as connection:
        shadow = iotshadow.IotShadowClient(connection)
        deltas = subscribe(shadow.subscribe_to_shadow_delta_updated_events,
                           iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=thing))
        update_accepted = subscribe(shadow.subscribe_to_update_shadow_accepted,
                                    iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing))

        reply = operator.update_shadow(thing, {"state": {"desired": {"fan": {"speed": 3}}}, "clientToken": "op1"})
        assert reply.status == 200, reply.body
        delta = deltas.next()
        assert (delta.state, delta.version, delta.client_token) == ({"fan": {"speed": 3}}, 1, "op1")
        assert set(delta.metadata["fan"]["speed"]) == {"timestamp"}
        assert update_accepted.next().client_token == "op1"  # an HTTP update reaches MQTT subscribers too

        publish(shadow.publish_update_shadow, iotshadow.UpdateShadowRequest(
            thing_name=thing, client_token="dev1", version=delta.version,
            state=iotshadow.ShadowState(reported=delta.state)))
        assert update_accepted.next().version == 2
    document = operator.get_shadow(thing).json()
    assert (document["version"], document["state"]["reported"]) == (2, {"fan": {"speed": 3}})
    assert "delta" not in document["state"]


def test_the_v2_request_response_client_over_mqtt5_correlates_every_answer(sdk, cloud, broker):
    thing = unique_thing(cloud)
    with mqtt5_client(broker.port, thing) as client:
        shadow = iotshadow.IotShadowClientV2(client, mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=4, max_streaming_subscriptions=2, operation_timeout_in_seconds=5))
        statuses, deltas = Inbox(), Inbox()
        stream = shadow.create_shadow_delta_updated_stream(
            iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=thing),
            ServiceStreamOptions(incoming_event_listener=deltas, subscription_status_listener=statuses))
        stream.open()
        assert statuses.next().type == mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED

        with pytest.raises(V2ServiceException) as absent:
            shadow.get_shadow(iotshadow.GetShadowRequest(thing_name=thing)).result(TIMEOUT)
        assert (absent.value.modeled_error.code, absent.value.modeled_error.message) == \
            (404, f"No shadow exists with name: '{thing}'")

        assert cloud.client().update_shadow(thing, {"state": {"desired": {"mode": "eco"}}}).status == 200
        delta = deltas.next()
        assert (delta.state, delta.version) == ({"mode": "eco"}, 1)

        reported = shadow.update_shadow(iotshadow.UpdateShadowRequest(
            thing_name=thing, version=delta.version, state=iotshadow.ShadowState(reported=delta.state)))
        accepted = reported.result(TIMEOUT)
        assert (accepted.version, accepted.state.reported) == (2, {"mode": "eco"})
        with pytest.raises(V2ServiceException) as conflict:
            shadow.update_shadow(iotshadow.UpdateShadowRequest(
                thing_name=thing, version=1, state=iotshadow.ShadowState(reported={"mode": "off"}))).result(TIMEOUT)
        assert (conflict.value.modeled_error.code, conflict.value.modeled_error.message) == (409, "Version conflict")

        document = shadow.get_shadow(iotshadow.GetShadowRequest(thing_name=thing)).result(TIMEOUT)
        assert (document.version, document.state.reported, document.state.delta) == (2, {"mode": "eco"}, None)
        deleted = shadow.delete_shadow(iotshadow.DeleteShadowRequest(thing_name=thing)).result(TIMEOUT)
        assert deleted.version == 2
        assert deltas.empty()
