"""The poller: its pure core (delays, ETags, what an answer means), then the actor against a stub cloud."""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conf
import messages
from actors.runtime.system import AgentSystem
from actors.target.policy import Policy
from actors.target.poller import PollerSettings, interpret, known_etag, poll_delay
from conf.schema import ConfigError, parse
from messages.bus.target import PollNow, TargetStateFetched, TargetStateRejected
from messages.protocol.target_state import parse_target_state, to_json
from messages.transport.http import Response
from store import Store, TargetRecord, TargetRejection
from tests.integration.test_supervision import agent_config
from tests.support.polling import wait_for, wait_quiet
from tests.support.stub_cloud import StubCloud

TARGET = {"apps": {"1": {"appName": "web", "services": [
    {"serviceName": "nginx", "config": {"image": "fleetlet-test/busybox:1", "environment": {"A": "1"}}}]}}}


OPEN = Policy()  # no reserved ports


def ok(document, etag: str | None = '"a"') -> Response:
    return Response(200, {} if etag is None else {"etag": etag}, json.dumps(document).encode())


# -- pure core ---------------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(failures=st.integers(0, 100), fraction=st.floats(0, 1), jitter=st.floats(0, 0.9))
def test_delay_is_the_interval_or_a_capped_doubling_backoff_within_the_jitter_band(failures, fraction, jitter):
    options = PollerSettings(interval=60.0, jitter=jitter, backoff_min=2.0, backoff_max=300.0)
    delay = poll_delay(options, failures, fraction)
    base = 60.0 if failures == 0 else min(300.0, 2.0 * 2 ** (failures - 1))
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9
    if failures:
        assert poll_delay(options, failures + 1, fraction) >= delay


def test_the_etag_sent_is_the_newest_document_seen_in_store_order_whatever_the_clocks():
    stored = TargetRecord({}, '"good"', 100.0, seq=5)
    assert known_etag(None, None) is None
    assert known_etag(stored, None) == '"good"'
    assert known_etag(stored, TargetRejection('"bad"', "why", 50.0, seq=6)) == '"bad"'  # the clock went back
    assert known_etag(stored, TargetRejection('"older-bad"', "why", 150.0, seq=4)) == '"good"'
    assert known_etag(None, TargetRejection('"bad"', "why", 1.0, seq=1)) == '"bad"'


def test_a_new_valid_document_is_fetched_in_canonical_form():
    fetched = interpret(ok(TARGET), None, 10.0, OPEN)
    assert isinstance(fetched, TargetStateFetched)
    assert fetched.etag == '"a"' and fetched.fetched_at == 10.0
    assert fetched.document == to_json(parse_target_state(TARGET))


def test_not_modified_and_the_same_document_again_mean_nothing_new():
    stored = TargetRecord(to_json(parse_target_state(TARGET)), '"a"', 1.0)
    assert interpret(Response(304, {"etag": '"a"'}, b""), stored, 2.0, OPEN) is None
    assert interpret(ok(TARGET, '"a"'), stored, 2.0, OPEN) is None
    assert interpret(ok(TARGET, etag=None), stored, 2.0, OPEN) is None  # no ETag: compared by content
    assert isinstance(interpret(ok(TARGET, '"b"'), stored, 2.0, OPEN), TargetStateFetched)


@pytest.mark.parametrize("body, reason", [
    (b"<html>502 Bad Gateway</html>", "document: not valid JSON"),
    (b'{"apps": {"1": {"services": [{"serviceName": "x"}]}}}', "apps.1.services[0].config: required field"),
    (json.dumps({"apps": {"1": {"services": [{"serviceName": "x", "serviceId": 10 ** 30,
                                              "config": {"image": "a:1"}}]}}}).encode(), "cannot be stored"),
])
def test_an_invalid_document_is_rejected_whole_with_its_reason(body, reason):
    rejected = interpret(Response(200, {"etag": '"bad"'}, body), None, 5.0, OPEN)
    assert isinstance(rejected, TargetStateRejected)
    assert rejected.etag == '"bad"' and rejected.at == 5.0
    assert reason in rejected.reason


def test_a_target_that_breaks_the_owners_policy_is_rejected_whole_with_the_key_that_would_allow_it():
    doc = {"apps": {"1": {"appName": "web", "services": [
        {"serviceName": "nginx", "config": {"image": "busybox:1", "ports": ["127.0.0.1:8080:80", "19500:80"]}}]}}}
    rejected = interpret(ok(doc), None, 5.0, Policy(reserved_ports=((19500, "the agent's admin port"),)))
    assert isinstance(rejected, TargetStateRejected) and rejected.etag == '"a"'
    assert rejected.reason == (
        "policy: apps.1 service nginx: config.ports '127.0.0.1:8080:80/tcp': host address 127.0.0.1 is loopback "
        "(policy.allow_loopback_ports = true allows it); apps.1 service nginx: config.ports '19500:80/tcp': "
        "host port 19500 is the agent's admin port (no policy allows it)")
    allowed = interpret(ok(doc), None, 5.0, Policy(allow_loopback_ports=True))
    assert isinstance(allowed, TargetStateFetched)
    assert allowed.document["apps"]["1"]["services"][0]["config"]["ports"] == ["127.0.0.1:8080:80/tcp", "19500:80/tcp"]


def test_settings_are_checked_and_the_documented_defaults_are_the_code_defaults():
    assert parse(PollerSettings, conf.defaults("agent")["actors"]["poller"]["settings"],
                 "actors.poller.settings") == PollerSettings()
    assert parse(PollerSettings, {"interval": 5}, "actors.poller.settings").interval == 5.0
    with pytest.raises(ConfigError, match=r"actors.poller.settings.intervall: unknown setting"):
        parse(PollerSettings, {"intervall": 5}, "actors.poller.settings")
    with pytest.raises(ConfigError, match="interval must be float, got str"):
        parse(PollerSettings, {"interval": "5"}, "actors.poller.settings")
    with pytest.raises(ConfigError, match="jitter must be in"):
        parse(PollerSettings, {"jitter": 1.5}, "actors.poller.settings")


# -- the actor against a stub cloud ----------------------------------------------------------------------


class ScriptedTarget:
    """Serves one document with its ETag (304 when If-None-Match names it), or a status while `failing`."""

    def __init__(self):
        self.body, self.etag, self.failing = json.dumps(TARGET).encode(), '"a"', None

    def __call__(self, request):
        if self.failing:
            return self.failing, {}, b"{}"
        if request.headers.get("if-none-match") == self.etag:
            return 304, {"ETag": self.etag}, b""
        return 200, {"ETag": self.etag}, self.body


@pytest.fixture
def poller_agent(tmp_path, port):
    script = ScriptedTarget()
    with StubCloud(script) as cloud:
        config = agent_config(tmp_path, port, {
            "persistence": {"class": "actors.persistence.Persistence",
                            "subscribes": ["TargetStateFetched", "TargetStateRejected", "RecordError", "ClearError"]},
            "poller": {"class": "actors.target.poller.Poller", "subscribes": ["PollNow"],
                       "settings": {"interval": 0.2, "jitter": 0.0, "backoff_min": 0.2, "backoff_max": 0.8,
                                    "min_gap": 0.05}},
        })
        config["cloud"]["url"] = cloud.url
        config["device"]["uuid"] = "pump-7"
        system = AgentSystem(config)
        system.start()
        yield system, cloud, script, str(tmp_path / "agent.db")
        system.stop()


def stored(db: str):
    with Store.open(db, readonly=True) as store:
        return store.load_target(), store.last_target_rejection(), store.errors()


def test_polls_with_the_etag_stores_new_targets_and_rejects_bad_ones(poller_agent):
    system, cloud, script, db = poller_agent
    wait_for(lambda: stored(db)[0] is not None, what="the first target stored")
    assert stored(db)[0].etag == '"a"'
    wait_for(lambda: any(r.headers.get("if-none-match") == '"a"' for r in cloud.seen()), what="a conditional poll")
    assert all(r.path == "/api/v1/device/pump-7/target-state" for r in cloud.seen())

    script.body, script.etag = b'{"apps": {"1": {"services": "nginx"}}}', '"b"'
    rejection = wait_for(lambda: stored(db)[1], what="the rejection stored")
    assert rejection.etag == '"b"' and "apps.1.services: must be an array" in rejection.reason
    assert stored(db)[0].etag == '"a"'  # the last good target stays in force
    wait_for(lambda: any(e["source"] == "target" and e["key"] == "rejected" for e in stored(db)[2]),
             what="the rejection's error row")  # written just after the rejection itself
    wait_for(lambda: cloud.seen()[-1].headers.get("if-none-match") == '"b"', what="polls naming the rejected one")

    script.body, script.etag = json.dumps({"apps": {}}).encode(), '"c"'
    wait_for(lambda: stored(db)[0].etag == '"c"', what="the next good target")
    assert stored(db)[0].document == {"apps": {}}
    assert not any(e["source"] == "target" for e in stored(db)[2])


def test_errors_back_off_exponentially_are_recorded_and_cleared(poller_agent):
    system, cloud, script, db = poller_agent
    wait_for(lambda: stored(db)[0] is not None, what="the first target stored")
    script.failing = 503
    failed_from = len(cloud.seen())
    wait_for(lambda: len(cloud.seen()) >= failed_from + 4, timeout=10, what="four failed polls")
    times = [r.at for r in cloud.seen()[failed_from:failed_from + 4]]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] == pytest.approx(0.2, abs=0.15) and gaps[1] == pytest.approx(0.4, abs=0.15)
    assert gaps[2] == pytest.approx(0.8, abs=0.2)
    errors = wait_for(lambda: [e for e in stored(db)[2] if e["source"] == "poller"], what="the error recorded")
    assert "HTTP 503" in errors[0]["message"] and errors[0]["count"] >= 3
    script.failing = None
    wait_for(lambda: not [e for e in stored(db)[2] if e["source"] == "poller"], timeout=5, what="the error cleared")


def test_no_target_yet_is_shown_but_polled_at_the_interval(poller_agent):
    system, cloud, script, db = poller_agent
    wait_for(lambda: stored(db)[0] is not None, what="the first target stored")
    script.failing = 404
    failed_from = len(cloud.seen())
    wait_for(lambda: len(cloud.seen()) >= failed_from + 4, timeout=5, what="four polls")
    times = [r.at for r in cloud.seen()[failed_from:failed_from + 4]]
    assert all(b - a == pytest.approx(0.2, abs=0.1) for a, b in zip(times, times[1:], strict=False))
    errors = wait_for(lambda: [e for e in stored(db)[2] if e["source"] == "poller"], what="the condition shown")
    assert errors[0]["message"].startswith("the cloud has no target state for this device yet")


def test_poll_now_polls_at_once(tmp_path, port):
    with StubCloud(lambda request: (304, {}, b"")) as cloud:
        config = agent_config(tmp_path, port, {"poller": {"class": "actors.target.poller.Poller",
                                                          "subscribes": ["PollNow"],
                                                          "settings": {"interval": 60.0, "min_gap": 0.3}}})
        config["cloud"]["url"] = cloud.url
        system = AgentSystem(config)
        system.start()
        try:
            wait_for(lambda: len(cloud.seen()) == 1, what="the poll at start")
            wait_for(lambda: time.monotonic() - cloud.seen()[0].at >= 0.4, what="min_gap past since that poll")
            sent = time.monotonic()
            for _ in range(20):
                system.asys.tell(system.supervisor, messages.encode(PollNow("test")))
            wait_for(lambda: len(cloud.seen()) >= 2, timeout=2, what="the poll now")
            assert cloud.seen()[1].at - sent < 0.5
            wait_quiet(lambda: len(cloud.seen()), quiet=0.8, what="polls after the burst of notices")
            # A burst of notices: one poll at once, and at most one more (for notices that came during
            # it) min_gap later, never twenty.
            polls = [r.at for r in cloud.seen()[1:]]
            assert len(polls) <= 2 and (len(polls) == 1 or polls[1] - polls[0] >= 0.28)
        finally:
            system.stop()
