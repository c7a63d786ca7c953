"""The local API's pure core: HTTP parsing, who may call what, the answers it builds, the holds and keys."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from actors.api import metrics
from actors.api.http import MAX_BODY, MAX_HEAD, HttpError, Response, json_response, parse_request, render
from actors.api.keys import KEY_VARIABLE, grant_keys, opted_in, service_key
from actors.api.routes import (
    AppCaller,
    GetLogs,
    GetMetrics,
    GetPlan,
    GetShadow,
    GetStatus,
    Operator,
    PatchShadow,
    PollNow,
    ServiceCommand,
    authenticate,
    route,
)
from actors.api.views import local_shadow, merged_report, status_document, status_lines
from actors.runtime.figures import Figures
from actors.target.holds import apply_holds, holds_in_force, update_holds
from messages.bus.runtime import ChildStatus, StatusReply
from messages.protocol.target_state import parse_target_state
from store import TargetRecord, TargetRejection

OPERATOR = "operator-key"


def raw(method: str, target: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    fields = {"Host": "x", "Content-Length": str(len(body)), **(headers or {})}
    return (f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) +
            "\r\n").encode() + body


def request(method: str, target: str, body: bytes = b""):
    parsed = parse_request(raw(method, target, body))
    assert parsed is not None
    return parsed


# -- HTTP -------------------------------------------------------------------------------------------------------

def test_a_request_is_parsed_once_complete():
    data = raw("PATCH", "/v1/shadow?name=cfg", b'{"reported": {"a": 1}}')
    for cut in range(len(data)):
        assert parse_request(data[:cut]) is None
    parsed = parse_request(data)
    assert parsed.method == "PATCH" and parsed.segments == ("v1", "shadow") and parsed.query == {"name": "cfg"}
    assert parsed.body == b'{"reported": {"a": 1}}' and parsed.headers["host"] == "x"


def test_path_segments_are_decoded_one_by_one():
    assert request("GET", "/v1/apps/a%2Fb/services/web/logs").segments == ("v1", "apps", "a/b", "services", "web",
                                                                          "logs")
    assert request("GET", "/v1/status/").segments == ("v1", "status")


@pytest.mark.parametrize("data, status", [
    (b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n".replace(b"GET", b"BREW"), 501),
    (b"GET v1/status HTTP/1.1\r\n\r\n", 400),
    (b"GET /v1/status HTTP/2\r\n\r\n", 400),
    (b"GET /v1/../status HTTP/1.1\r\n\r\n", 400),
    (b"GET /v1//status HTTP/1.1\r\n\r\n", 400),
    (b"GET /v1/%00 HTTP/1.1\r\n\r\n", 400),
    (b"GET /v1/%ff HTTP/1.1\r\n\r\n", 400),
    (b"GET /v1/status?a=1&a=2 HTTP/1.1\r\n\r\n", 400),
    (b"GET /v1/status HTTP/1.1\r\nbad header\r\n\r\n", 400),
    (b"GET /v1/status HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET /v1/status HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
    (b"POST /v1/poll-now HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
    (f"PATCH /v1/shadow HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(), 413),
    (b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\n\r\n", 431),
    (b"GET /" + b"a" * (MAX_HEAD + 1), 431),
    ("GET /v1/é HTTP/1.1\r\n\r\n".encode(), 400),
])
def test_what_http_refuses(data, status):
    with pytest.raises(HttpError) as refused:
        parse_request(data)
    assert refused.value.status == status


@given(st.binary(max_size=2048))
def test_any_bytes_parse_or_are_refused_never_crash(data):
    try:
        parse_request(data)
    except HttpError as exc:
        assert 400 <= exc.status < 600


@given(st.text(st.characters(min_codepoint=32, max_codepoint=0x10FFFF, blacklist_categories=("Cs",),
                            blacklist_characters="\x7f"), min_size=1,
               max_size=40))
def test_a_segment_round_trips_through_percent_encoding(name):
    from urllib.parse import quote
    if name in (".", ".."):
        return
    assert request("GET", f"/v1/apps/{quote(name, safe='')}/services/s/logs").segments[2] == name


def test_a_response_is_rendered_with_its_length_and_closed():
    data = render(json_response(202, {"a": 1}))
    head, body = data.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202 Accepted\r\n") and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head and json.loads(body) == {"a": 1}


# -- keys and routes --------------------------------------------------------------------------------------------

def test_the_bearer_key_names_the_caller():
    app_keys = {service_key(OPERATOR, "1"): "1"}
    assert authenticate({"authorization": f"Bearer {OPERATOR}"}, OPERATOR, app_keys) == Operator()
    assert authenticate({"authorization": f"Bearer {service_key(OPERATOR, '1')}"}, OPERATOR, app_keys) == AppCaller("1")
    for headers in ({}, {"authorization": "Bearer"}, {"authorization": f"Basic {OPERATOR}"},
                    {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {service_key(OPERATOR, '2')}"}):
        answer = authenticate(headers, OPERATOR, app_keys)
        assert isinstance(answer, Response) and answer.status == 401
        assert ("WWW-Authenticate", 'Bearer realm="fleetlet"') in answer.headers


def test_service_keys_are_stable_per_app_and_change_with_the_operator_key():
    assert service_key(OPERATOR, "1") == service_key(OPERATOR, "1")
    assert len({service_key(OPERATOR, "1"), service_key(OPERATOR, "2"), service_key("other", "1")}) == 3


@pytest.mark.parametrize("method, target, body, action", [
    ("GET", "/v1/status", b"", GetStatus()),
    ("GET", "/v1/plan", b"", GetPlan()),
    ("POST", "/v1/poll-now", b"", PollNow()),
    ("GET", "/metrics", b"", GetMetrics()),
    ("POST", "/v1/apps/1/services/web/restart", b"", ServiceCommand("1", "web", "restart")),
    ("POST", "/v1/apps/1/services/web/stop", b"", ServiceCommand("1", "web", "stop")),
    ("POST", "/v1/apps/1/services/web/start", b"", ServiceCommand("1", "web", "start")),
    ("GET", "/v1/apps/1/services/web/logs", b"", GetLogs("1", "web", 100, False)),
    ("GET", "/v1/apps/1/services/web/logs?tail=5&follow=1", b"", GetLogs("1", "web", 5, True)),
    ("GET", "/v1/shadow", b"", GetShadow("")),
    ("GET", "/v1/shadow?name=cfg", b"", GetShadow("cfg")),
    ("PATCH", "/v1/shadow?name=cfg", b'{"reported": {"a": {"b": 1}}}', PatchShadow("cfg", {"a": {"b": 1}})),
])
def test_routes_for_the_operator(method, target, body, action):
    assert route(request(method, target, body), Operator()) == action


@pytest.mark.parametrize("method, target, body, status, words", [
    ("GET", "/v2/status", b"", 404, "no such resource"),
    ("GET", "/v1/apps/1/services/web/reboot", b"", 404, "no such resource"),
    ("POST", "/v1/status", b"", 405, "use GET"),
    ("GET", "/v1/poll-now", b"", 405, "use POST"),
    ("GET", "/v1/status?verbose=1", b"", 400, "unknown query parameter 'verbose'"),
    ("GET", "/v1/apps/1/services/web/logs?tail=-1", b"", 400, "tail must be"),
    ("GET", "/v1/apps/1/services/web/logs?tail=10001", b"", 400, "tail must be"),
    ("GET", "/v1/apps/1/services/web/logs?follow=yes", b"", 400, "follow must be 0 or 1"),
    ("GET", "/v1/shadow?name=a%20b", b"", 400, "name:"),
    ("PATCH", "/v1/shadow", b'{"reported": {"a": 1}, "desired": {}}', 400, '{"reported": {...}}'),
    ("PATCH", "/v1/shadow", b'{"reported": []}', 400, '{"reported": {...}}'),
    ("PATCH", "/v1/shadow", b'{"reported": {}}', 400, "nothing to report"),
    ("PATCH", "/v1/shadow", b'{"reported": {"a": 1, "a": 2}}', 400, "Invalid JSON"),
    ("PATCH", "/v1/shadow", b'{"reported": {"a": 1e999}}', 400, "Invalid JSON"),
    ("PATCH", "/v1/shadow", b'{"reported": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "Invalid JSON"),
    ("PATCH", "/v1/shadow", b"\xff", 400, "Invalid JSON"),
])
def test_what_the_routes_refuse(method, target, body, status, words):
    answer = route(request(method, target, body), Operator())
    assert isinstance(answer, Response) and answer.status == status
    assert words in json.loads(answer.body)["error"]


@pytest.mark.parametrize("target, method, allowed", [
    ("/v1/apps/1/services/web/restart", "POST", True),
    ("/v1/apps/1/services/web/logs", "GET", True),
    ("/v1/shadow", "GET", True),
    ("/v1/apps/2/services/web/restart", "POST", False),
    ("/v1/apps/2/services/web/logs", "GET", False),
    ("/v1/status", "GET", False),
    ("/v1/plan", "GET", False),
    ("/v1/poll-now", "POST", False),
    ("/metrics", "GET", False),
])
def test_an_app_key_reaches_only_its_own_app(target, method, allowed):
    answer = route(request(method, target), AppCaller("1"))
    if allowed:
        assert not isinstance(answer, Response)
    else:
        assert isinstance(answer, Response) and answer.status == 403
        assert json.loads(answer.body) == {"error": "this key may call only what concerns app 1"}


SEGMENT = st.sampled_from(["v1", "apps", "services", "shadow", "status", "plan", "poll-now", "metrics", "logs",
                           "restart", "stop", "start", "1", "2", "web", "x y", "é"])


@given(st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE"]), st.lists(SEGMENT, max_size=6),
       st.dictionaries(st.sampled_from(["name", "tail", "follow", "x"]), st.text(max_size=8), max_size=3),
       st.binary(max_size=64), st.sampled_from([Operator(), AppCaller("1")]))
def test_any_request_routes_to_an_action_or_an_answer_and_an_app_stays_in_its_app(method, segments, query, body,
                                                                                   caller):
    from actors.api.http import Request
    answer = route(Request(method, tuple(segments), query, {}, body), caller)
    if isinstance(answer, Response):
        assert answer.status in (400, 403, 404, 405) and set(json.loads(answer.body)) == {"error"}
    elif isinstance(caller, AppCaller):
        assert isinstance(answer, (GetShadow, PatchShadow)) or answer.app_id == "1"


# -- views ------------------------------------------------------------------------------------------------------

def test_the_local_shadow_applies_the_outbox_to_what_was_read():
    document = {"state": {"desired": {"t": 22, "mode": "eco"}, "reported": {"t": 20, "mode": "eco"}}}
    view = local_shadow(document, 7, None, {"t": 22, "battery": 80, "mode": None})
    assert view == {"state": {"desired": {"t": 22, "mode": "eco"}, "reported": {"t": 22, "battery": 80},
                              "delta": {"mode": "eco"}}, "version": 7, "pending": True}
    answered = local_shadow(document, 7, None, {"t": 22}, {"sensor": {"ok": False}, "t": None})
    assert answered["state"]["reported"] == {"mode": "eco", "sensor": {"ok": False}} and answered["pending"]
    assert local_shadow(None, None, {"a": 1}, None) == {"state": {"desired": {}, "reported": {"a": 1}, "delta": {}},
                                                        "version": None, "pending": False}


def test_a_patch_becomes_a_handlers_answer_merged_into_what_is_reported():
    current = {"t": 22, "sensor": {"ok": True, "unit": "C"}, "mode": "eco"}
    assert merged_report(current, {"sensor": {"ok": False}, "battery": 80, "t": None, "mode": {"a": 1}}) == {
        "sensor": {"ok": False, "unit": "C"}, "battery": 80, "t": None, "mode": {"a": 1}}
    assert merged_report(current, {"sensor": {"ok": None, "unit": None}}) == {"sensor": None}
    assert merged_report({}, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}


def test_the_status_document_and_its_lines():
    child = ChildStatus("poller", "actors.target.poller.Poller", 12, "running", 2, "boom", 1, 0, 3, {})
    doc = status_document(StatusReply("running", None, (child,), "9.9"),
                          [{"source": "poller", "key": "fetch", "message": "down", "count": 2, "at": 1.0}])
    assert doc["actors"][0] == {"name": "poller", "class": "actors.target.poller.Poller", "pid": 12,
                                "state": "running", "restarts": 2, "last_error": "boom", "held_messages": 1,
                                "superseded_messages": 0, "dropped_messages": 3}
    assert doc["target"] == {"etag": None, "received_at": None}
    assert status_lines(json.loads(json.dumps(doc))) == [
        "agent 9.9: running",
        "  poller           pid=12 state=running restarts=2 held=1 dropped=3 last_error=boom",
        "  error poller/fetch: down (x2)"]
    stored, refused = TargetRecord({}, '"v1"', 5.0, 1), TargetRejection('"v2"', "apps.1: bad", 6.0, 2)
    doc = status_document(StatusReply("running", None, (), "9.9"), [], (stored, refused))
    assert doc["target"] == {"etag": '"v1"', "received_at": 5.0,
                             "rejected": {"etag": '"v2"', "reason": "apps.1: bad", "at": 6.0}}
    assert status_lines(doc)[1] == '  target "v1"; refused "v2": apps.1: bad'
    older = TargetRejection('"v0"', "old", 1.0, 0)
    assert "rejected" not in status_document(StatusReply("running", None, (), "9.9"), [], (stored, older))["target"]


# -- holds and keys in the planned target ----------------------------------------------------------------------

TARGET = parse_target_state({"apps": {
    "1": {"appName": "a", "services": [{"serviceName": "web", "config": {
        "image": "busybox:1", "labels": {"fleetlet.api": "true"}, "environment": {"A": "1", "Z": "2"}}},
        {"serviceName": "db", "config": {"image": "busybox:1"}}]},
    "2": {"appName": "b", "services": [{"serviceName": "web", "config": {"image": "busybox:1"}}]}}})


def test_a_hold_lasts_until_another_target_or_a_start():
    record = update_holds(None, '"v1"', "1", "web", True)
    record = update_holds(record, '"v1"', "2", "web", True)
    assert holds_in_force(record, '"v1"') == {("1", "web"), ("2", "web")}
    assert holds_in_force(update_holds(record, '"v1"', "1", "web", False), '"v1"') == {("2", "web")}
    assert holds_in_force(record, '"v2"') == frozenset()
    assert holds_in_force(update_holds(record, '"v2"', "1", "db", True), '"v2"') == {("1", "db")}
    for garbage in ({"etag": '"v1"', "holds": [["x"], 3, ["a", 1]]}, {"etag": '"v1"'}, [], "x"):
        assert holds_in_force(garbage, '"v1"') == frozenset()


def test_a_held_service_is_planned_stopped_and_nothing_else_changes():
    held = apply_holds(TARGET, {("1", "web")})
    assert not held.app("1").service("web").config.running
    assert held.app("1").service("db") == TARGET.app("1").service("db") and held.app("2") == TARGET.app("2")
    assert apply_holds(TARGET, set()) is TARGET


def test_keys_go_to_the_services_that_ask_deterministically():
    assert opted_in(TARGET) == {"1"}
    granted = grant_keys(TARGET, OPERATOR)
    assert dict(granted.app("1").service("web").config.environment) == {
        "A": "1", KEY_VARIABLE: service_key(OPERATOR, "1"), "Z": "2"}
    assert [name for name, _ in granted.app("1").service("web").config.environment] == ["A", KEY_VARIABLE, "Z"]
    assert granted.app("1").service("db") == TARGET.app("1").service("db") and granted.app("2") == TARGET.app("2")
    assert grant_keys(TARGET, OPERATOR) == granted  # the planner sees no change from one pass to the next


# -- figures and metrics ------------------------------------------------------------------------------------------

def test_every_family_is_exposed_and_parses():
    figures = Figures()
    figures.count("fleetlet_polls", outcome="304")
    figures.count("fleetlet_polls", 2, outcome="304")
    figures.observe("fleetlet_reconcile_pass_seconds", 0.25)
    figures.observe("fleetlet_reconcile_pass_seconds", 0.75)
    child = ChildStatus("poller", "x", 1, "running", 4, None, 0, 0, 0, figures.snapshot())
    api = metrics.ApiCounters()
    api.request(None, 401)  # type: ignore[arg-type]
    text = metrics.exposition(metrics.families(StatusReply("running", None, (child,), "1"), {"shadow:x/": 2}, api,
                                               1024, 1.5)).decode()
    parsed = {family.name: family for family in text_string_to_metric_families(text)}
    assert set(metrics.FAMILIES) <= set(parsed)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parsed.values() for s in f.samples}
    assert samples[("fleetlet_polls_total", (("outcome", "304"),))] == 3
    assert samples[("fleetlet_actor_restarts_total", (("actor", "poller"),))] == 4
    assert samples[("fleetlet_reconcile_pass_seconds_count", ())] == 2
    assert samples[("fleetlet_reconcile_pass_seconds_sum", ())] == 1.0
    assert samples[("fleetlet_outbox_depth", (("channel", "shadow:x/"),))] == 2
    assert samples[("fleetlet_api_requests_total", (("answer", "401"),))] == 1
    assert samples[("fleetlet_memory_pss_bytes", ())] == 1024 and samples[("fleetlet_cpu_seconds_total", ())] == 1.5


def test_figures_of_one_family_from_two_actors_are_summed():
    link = {"fleetlet_link_bytes": [[{"direction": "sent", "link": "http"}, 100]]}
    children = tuple(ChildStatus(name, "x", 1, "running", 0, None, 0, 0, 0, link) for name in ("poller", "reporter"))
    text = metrics.exposition(metrics.families(StatusReply("running", None, children, "1"), {},
                                               metrics.ApiCounters(), 0, 0.0)).decode()
    assert [line for line in text.splitlines() if line.startswith("fleetlet_link_bytes_total")] == [
        'fleetlet_link_bytes_total{direction="sent",link="http"} 200.0']


def test_a_figures_snapshot_is_a_bus_value():
    import messages
    from messages.bus.runtime import Figures as FiguresMessage

    figures = Figures()
    figures.count("fleetlet_steps", action="create", outcome="ok")
    message = FiguresMessage("reconciler", figures.snapshot())
    assert messages.decode(messages.encode(message)) == message
