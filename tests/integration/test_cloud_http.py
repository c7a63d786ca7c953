"""The cloud's HTTP API, running, on SQLite and on PostgreSQL: target states, reports, shadows, auth, errors."""
from __future__ import annotations

import http.client
import json
import socket

import pytest

from messages.transport.http import CloudClient
from messages.transport.tls import TlsSettings, client_context
from tests.support.cloud import DEMO, MqttProbe
from tests.support.pki import session_pki

pytestmark = pytest.mark.broker

TARGET = {"apps": {"1": {"appId": "1", "appName": "web", "services": [
    {"serviceId": "1", "serviceName": "nginx", "imageName": "nginx:1.25", "config": {"image": "nginx:1.25"}}]}}}
OTHER = {"uuid": "pump-7", "thing": "pump-7", "token": "pump-7-token"}


def device(cloud, who: dict) -> CloudClient:
    return cloud.client(who["token"])


@pytest.fixture
def pump(cloud):
    """A second registered device."""
    assert cloud.client().register_device(OTHER["uuid"], OTHER["thing"], OTHER["token"]).status == 201
    return OTHER


def test_target_state_has_a_strong_etag_and_changes_notify_the_device(cloud, broker):
    demo = device(cloud, DEMO)
    assert demo.get_target(DEMO["uuid"]).status == 404
    with MqttProbe(broker.port) as probe:
        probe.subscribe("fleetlet/devices/demo-device/poll-now")
        set_reply = cloud.client().set_target(DEMO["uuid"], TARGET)
        assert set_reply.status == 200
        etag = set_reply.json()["etag"]
        assert etag.startswith('"') and etag.endswith('"') and set_reply.json()["changed"] is True
        assert probe.expect("fleetlet/devices/demo-device/poll-now") == {"uuid": "demo-device", "etag": etag}

        got = demo.get_target(DEMO["uuid"])
        assert (got.status, got.headers["etag"]) == (200, etag)
        assert got.json()["apps"]["1"]["services"][0]["config"]["image"] == "nginx:1.25"
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            unchanged = demo.get_target(DEMO["uuid"], etag=header)
            assert (unchanged.status, unchanged.body, unchanged.headers["etag"]) == (304, b"", etag)

        # The same document again changes nothing and notifies no one; another one does both.
        assert cloud.client().set_target(DEMO["uuid"], json.dumps(TARGET).encode()).json()["changed"] is False
        changed = json.loads(json.dumps(TARGET))
        changed["apps"]["1"]["services"][0].update(imageName="nginx:1.26", config={"image": "nginx:1.26"})
        new_etag = cloud.client().set_target(DEMO["uuid"], changed).json()["etag"]
        assert probe.expect("fleetlet/devices/demo-device/poll-now")["etag"] == new_etag
        assert probe.received("fleetlet/devices/demo-device/poll-now") == []
    assert demo.get_target(DEMO["uuid"], etag=etag).status == 200
    assert demo.get_target(DEMO["uuid"], etag=new_etag).status == 304


def test_an_invalid_target_state_is_refused_with_its_reason(cloud):
    admin = cloud.client()
    bad = json.loads(json.dumps(TARGET))
    bad["apps"]["1"]["services"][0]["config"]["ports"] = ["99999:80"]
    digits = json.loads(json.dumps(TARGET))  # issue 14: int() of > 4,300 digits answered 500
    digits["apps"]["1"]["services"][0]["config"]["ports"] = ["9" * 4301]
    huge = b'{"apps": {"1": {"appId": 18446744073709551616, "services": []}}}'
    for body, reason in ((bad, "ports"), (b"{", "not valid JSON"), ({"apps": []}, "apps"), ([], "document"),
                         (digits, "ports[0]: longer than"), (huge, "apps.1.appId: an integer outside")):
        reply = admin.set_target(DEMO["uuid"], body)
        assert reply.status == 400 and reason in reply.json()["error"], reply.json()
    assert admin.set_target("nobody", TARGET).status == 404
    assert admin.set_target("bad uuid", TARGET).status == 400
    assert device(cloud, DEMO).get_target(DEMO["uuid"]).status == 404  # nothing was stored


def test_tokens_are_checked_on_every_device_call(cloud, pump):
    anonymous, stranger = cloud.client(None), cloud.client("not-a-token")
    demo, other = device(cloud, DEMO), device(cloud, pump)
    cloud.client().set_target(DEMO["uuid"], TARGET)
    calls = [
        lambda c: c.get_target(DEMO["uuid"]),
        lambda c: c.report_state({DEMO["uuid"]: {"status": "idle"}}),
        lambda c: c.get_shadow(DEMO["thing"]),
        lambda c: c.update_shadow(DEMO["thing"], {"state": {"reported": {"a": 1}}}),
        lambda c: c.delete_shadow(DEMO["thing"], "config"),
        lambda c: c.emqx_shadow(DEMO["thing"]),
    ]
    for call in calls:
        for client in (anonymous, stranger):
            reply = call(client)
            assert reply.status == 401 and "bearer" in reply.headers["www-authenticate"].lower()
        assert call(other).status == 403
        assert call(demo).status in (200, 404)
    for admin_only in (lambda c: c.set_target(DEMO["uuid"], TARGET), lambda c: c.device_state(DEMO["uuid"]),
                       lambda c: c.register_device("x-1", "x-1", "x-1-token-long")):
        assert admin_only(demo).status == 403
        assert admin_only(anonymous).status == 401
    malformed = cloud.client(None).request("GET", "/things/demo-device/shadow",
                                               headers={"Authorization": "Basic ZGVtbzpkZW1v"})
    assert malformed.status == 401


def test_device_reports_are_merged_and_kept(cloud, pump):
    demo = device(cloud, DEMO)
    assert demo.report_state({DEMO["uuid"]: {"status": "Idle", "apps": {"1": {"services": {"nginx": "running"}}},
                                             "ip": "10.0.0.2"}}).status == 200
    assert demo.report_state({DEMO["uuid"]: {"apps": {"1": {"services": {"db": "starting"}}}, "ip": None}}).status \
        == 200
    state = cloud.client().device_state(DEMO["uuid"]).json()
    assert state["state"] == {"status": "Idle", "apps": {"1": {"services": {"nginx": "running", "db": "starting"}}}}
    assert state["reports"] == 2 and isinstance(state["updated_at"], int)
    assert cloud.client().device_state(pump["uuid"]).status == 404  # has not reported

    for body, status in ((b"{", 400), (b"[]", 400), (b"{}", 400), ({DEMO["uuid"]: [1]}, 400),
                         ({"bad uuid": {}}, 400), ({pump["uuid"]: {"a": 1}}, 403),
                         ({DEMO["uuid"]: {"a": 1}, pump["uuid"]: {"a": 1}}, 403)):
        reply = demo.report_state(body)
        assert (reply.status, "error" in reply.json()) == (status, True), body
    assert cloud.client().report_state({"ghost": {"a": 1}}).status == 404
    assert cloud.client().report_state({pump["uuid"]: {"a": 1}}).status == 200  # the operator may
    assert cloud.client().device_state(DEMO["uuid"]).json()["reports"] == 2  # refused reports are not kept


def test_shadow_over_https_answers_as_aws_and_publishes_like_mqtt(cloud, broker):
    demo = device(cloud, DEMO)
    thing = DEMO["thing"]
    missing = demo.get_shadow(thing)
    assert (missing.status, missing.json()["code"], missing.json()["message"]) == \
        (404, 404, "No shadow exists with name: 'demo-device'")
    with MqttProbe(broker.port) as probe:
        topics = [f"${profile}/things/{thing}/shadow/{answer}" for profile in ("aws", "emqx")
                  for answer in ("update/accepted", "update/delta", "update/documents", "delete/accepted")]
        probe.subscribe(*topics, f"$aws/things/{thing}/shadow/update/rejected")
        reply = demo.update_shadow(thing, {"state": {"desired": {"fan": "high"}}, "clientToken": "h1"})
        assert reply.status == 200
        assert (reply.json()["state"], reply.json()["version"], reply.json()["clientToken"]) == \
            ({"desired": {"fan": "high"}}, 1, "h1")
        for profile in ("aws", "emqx"):
            prefix = f"${profile}/things/{thing}/shadow"
            assert probe.expect(f"{prefix}/update/accepted") == reply.json()
            assert probe.expect(f"{prefix}/update/delta")["state"] == {"fan": "high"}
            assert probe.expect(f"{prefix}/update/documents")["current"]["version"] == 1

        conflict = demo.update_shadow(thing, {"state": {"desired": {"fan": "low"}}, "version": 7, "clientToken": "h2"})
        assert (conflict.status, conflict.json()["message"], conflict.json()["clientToken"]) == \
            (409, "Version conflict", "h2")
        for body, code in ((b"", 400), (b"{", 400), (b'{"state": {"desired": 3}}', 400), (b"\xff", 415)):
            assert demo.update_shadow(thing, body).json()["code"] == code
        for body in (b'{"state": {"desired": {"l": 18446744073709551616}}}', b'{"state": {"desired": {"l": 1e999}}}',
                     b'{"state": {"desired": {"l": "\\ud800"}}}'):  # issue 14: served on every read, crashed the agent
            refused = demo.update_shadow(thing, body).json()
            assert refused["code"] == 400 and refused["message"].startswith("Invalid JSON: state.desired.l"), refused
        assert probe.received(f"$aws/things/{thing}/shadow/update/rejected") == []  # HTTP errors stay on HTTP

        got = demo.get_shadow(thing).json()
        assert (got["state"], got["version"]) == ({"desired": {"fan": "high"}, "delta": {"fan": "high"}}, 1)
        view = demo.emqx_shadow(thing).json()
        assert {key: view[key] for key in ("reported", "desired", "delta", "version")} == \
            {"reported": {}, "desired": {"fan": "high"}, "delta": {"fan": "high"}, "version": 1}
        assert view["updatedAt"].endswith("Z")

        named = demo.update_shadow(thing, {"state": {"reported": {"x": 1}}}, name="config")
        assert (named.status, named.json()["version"]) == (200, 1)
        assert demo.get_shadow(thing, "config").json()["state"] == {"reported": {"x": 1}}
        bad_name = demo.request("GET", f"/things/{thing}/shadow?name=no%20spaces")
        assert (bad_name.status, bad_name.json()["code"]) == (400, 400)
        assert demo.request("GET", f"/things/{thing}/shadow?name=a&name=b").status == 400

        deleted = demo.delete_shadow(thing)
        assert (deleted.status, deleted.json()["version"]) == (200, 1)
        for profile in ("aws", "emqx"):
            assert probe.expect(f"${profile}/things/{thing}/shadow/delete/accepted")["version"] == 1
    assert demo.get_shadow(thing).status == 404
    assert demo.delete_shadow(thing).status == 404
    assert demo.emqx_shadow(thing).json()["code"] == 404
    assert demo.get_shadow(thing, "config").status == 200  # the named shadow lives on


def test_bad_http_requests_get_clear_json_errors(cloud):
    admin = cloud.client()
    assert admin.request("GET", "/nowhere").status == 404
    wrong_method = admin.request("PUT", "/things/demo-device/shadow")
    assert wrong_method.status == 405 and set(wrong_method.headers["allow"].split(", ")) == {"GET", "POST", "DELETE"}
    assert raw_exchange(cloud, "POST", {"Content-Length": "2000000"}) == \
        (413, "close", "the body exceeds 1048576 bytes")  # refused unread, on its announced length
    assert raw_exchange(cloud, "POST", {"Content-Length": "9" * 5000})[:2] == (413, "close")  # int() stops at 4,300
    assert raw_exchange(cloud, "POST", {"Content-Length": "\u00b2"})[0] == 400  # "²".isdigit(), but not for int()
    assert raw_exchange(cloud, "POST", {"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n") == \
        (411, "close", "send the body with a Content-Length, not chunked")
    assert raw_exchange(cloud, "POST", {})[0] == 411
    unsupported = admin.request("OPTIONS", "/things/demo-device/shadow")
    assert (unsupported.status, unsupported.headers["content-type"]) == (501, "application/json")
    with tls_context().wrap_socket(socket.create_connection(("127.0.0.1", cloud.http_port), timeout=5),
                                   server_hostname="127.0.0.1") as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Long: " + b"x" * 70_000 + b"\r\n\r\n")
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 431") and answer.endswith(b'{"error": "Line too long"}')
    bad_thing = admin.get_shadow("no.dots")
    assert (bad_thing.status, bad_thing.json()["code"]) == (400, 400)
    assert admin.register_device("pump-8", "pump-8", "short").status == 400
    assert admin.register_device("pump-8", "pump-8", "test-admin-token").status == 400
    assert admin.register_device("pump-8", "pump-8", "demo-token").status == 409  # the demo device's
    assert admin.request("PUT", "/api/v1/devices/pump-8", {"thing": "pump-8"}).status == 400

    assert admin.health().json() == {"ready": True}  # still serving; readiness only, nothing about the store


def tls_context():
    """What the raw exchanges speak: the cloud serves https, with the session PKI's certificate."""
    return client_context(TlsSettings(session_pki().ca))


def raw_exchange(cloud, method: str, headers: dict, body: bytes = b"") -> tuple[int, str | None, str]:
    """Send a request exactly as given (http.client would fix it up): (status, Connection header, error)."""
    connection = http.client.HTTPSConnection("127.0.0.1", cloud.http_port, timeout=5, context=tls_context())
    try:
        connection.putrequest(method, "/things/demo-device/shadow")
        connection.putheader("Authorization", "Bearer demo-token")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.getheader("Connection"), json.loads(response.read())["error"]
    finally:
        connection.close()
