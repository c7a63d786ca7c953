"""The reporter: report patches and the target section (pure), then the actor against a stub cloud."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conf
import messages
from actors.runtime.system import AgentSystem
from actors.target.reporter import ReporterSettings, target_section
from conf.schema import parse
from fleetlet_version import __version__
from messages.bus.target import CurrentStateObserved, TargetStateRejected
from messages.protocol.patches import apply_patch, report_patch
from store import Store, TargetRejection
from tests.integration.test_supervision import agent_config
from tests.support.polling import wait_for, wait_quiet
from tests.support.stub_cloud import StubCloud

# Report documents: JSON without nulls (in a patch, null means "delete").
leaves = st.one_of(st.booleans(), st.integers(-5, 5), st.text(max_size=3), st.lists(st.integers(0, 3), max_size=2))
documents = st.recursive(leaves, lambda inner: st.dictionaries(st.text("abc", max_size=2), inner, max_size=4),
                         max_leaves=12)
objects = st.dictionaries(st.text("abc", max_size=2), documents, max_size=4)


@settings(max_examples=150)
@given(held=objects, latest=objects)
def test_the_patch_takes_what_the_cloud_holds_to_the_latest_state_for_known_sections(held, latest):
    patch = report_patch(held, latest)
    assert apply_patch(held, patch) == {**held, **latest}  # sections not known yet stay as they are
    assert report_patch(apply_patch(held, patch), latest) == {}  # and nothing is sent twice


def test_only_what_changed_is_in_the_patch():
    held = {"apps": {"1": {"update_status": "done", "services": {"a": {"status": "running", "containerId": "x"},
                                                                 "b": {"status": "running"}}}},
            "target_state": {"status": "accepted", "etag": '"1"'}}
    latest = {"apps": {"1": {"update_status": "applying", "services": {"a": {"status": "exited", "containerId": "x"}}}}}
    assert report_patch(held, latest) == {"apps": {"1": {"update_status": "applying", "services": {
        "a": {"status": "exited"}, "b": None}}}}
    assert report_patch(held, held) == {}
    assert report_patch({"a": 1}, {"a": True}) == {"a": True}  # true is not 1 in JSON


def test_the_target_section_shows_a_rejection_until_a_newer_target_is_stored():
    assert target_section(None, None, None) == {"status": "none"}
    assert target_section('"1"', 1, None) == {"status": "accepted", "etag": '"1"'}
    rejection = TargetRejection('"2"', "apps: must be an object", 5.0, 2)  # stored after "1", the clock went back
    assert target_section('"1"', 1, rejection) == {
        "status": "rejected", "etag": '"1"', "rejected": {"reason": "apps: must be an object", "at": 5.0,
                                                        "etag": '"2"'}}
    assert target_section('"3"', 3, rejection) == {"status": "accepted", "etag": '"3"'}


def test_the_documented_defaults_are_the_code_defaults():
    assert parse(ReporterSettings, conf.defaults("agent")["actors"]["reporter"]["settings"],
                 "actors.reporter.settings") == ReporterSettings()


# -- the actor against a stub cloud ----------------------------------------------------------------------

def apps(status: str, container: str = "c1") -> dict:
    return {"apps": {"1": {"update_status": "done", "services": {
        "web": {"containerId": container, "image": "fleetlet-test/busybox:1", "status": status}}}}}


@pytest.fixture
def reporter_agent(tmp_path, port):
    answer = {"status": 200}
    systems = []
    with StubCloud(lambda request: (answer["status"], {"Content-Type": "application/json"}, b"{}")) as cloud:
        def start():
            config = agent_config(tmp_path, port, {
                "persistence": {"class": "actors.persistence.Persistence",
                                "subscribes": ["TargetStateRejected", "EnqueueReport", "AckReport", "RecordError",
                                               "ClearError"]},
                "reporter": {"class": "actors.target.reporter.Reporter",
                             "subscribes": ["CurrentStateObserved", "ReportQueued", "TargetRejectionStored",
                                            "StoreReopened"],
                             "settings": {"throttle": 0.3, "retry_min": 0.1, "retry_max": 0.2}},
            })
            config["cloud"]["url"] = cloud.url
            config["device"]["uuid"] = "pump-7"
            system = AgentSystem(config)
            systems.append(system)
            system.start()
            return system

        yield start, cloud, answer
        for system in systems:
            system.stop()


def tell(system, msg) -> None:
    system.asys.tell(system.supervisor, messages.encode(msg))


def held_by_cloud(cloud) -> dict:
    held = {}
    for report in cloud.seen("PATCH"):
        held = apply_patch(held, report.json()["pump-7"])
    return held


def test_reports_changes_only_throttled_and_nothing_when_nothing_changed(reporter_agent):
    start, cloud, answer = reporter_agent
    system = start()
    tell(system, CurrentStateObserved(apps("running"), time.time()))
    wait_for(lambda: "apps" in held_by_cloud(cloud), what="the first report of the current state")
    first = cloud.seen("PATCH")[0]
    assert first.path == "/api/v1/device/state" and first.headers["authorization"] == "Bearer demo-token"
    assert held_by_cloud(cloud) == {**apps("running"), "agent_version": __version__,
                                    "target_state": {"status": "none"}}

    sent = len(cloud.seen("PATCH"))
    tell(system, CurrentStateObserved(apps("running"), time.time()))  # the same again: nothing to send
    tell(system, CurrentStateObserved(apps("exited"), time.time()))
    tell(system, CurrentStateObserved(apps("running", container="c2"), time.time()))  # merged with the previous change
    tell(system, TargetStateRejected('"9"', "apps: must be an object", 50.0))
    wait_for(lambda: len(cloud.seen("PATCH")) > sent, what="the next report")
    wait_quiet(lambda: len(cloud.seen("PATCH")), quiet=0.8, what="reports after the merged one")
    reports = cloud.seen("PATCH")
    assert len(reports) == sent + 1
    assert reports[-1].at - reports[-2].at >= 0.25  # throttled
    assert reports[-1].json() == {"pump-7": {
        "apps": {"1": {"services": {"web": {"containerId": "c2"}}}},
        "target_state": {"status": "rejected", "rejected": {"reason": "apps: must be an object", "at": 50.0,
                                                            "etag": '"9"'}}}}


def test_an_unsent_report_survives_a_restart_of_the_agent(reporter_agent, tmp_path):
    start, cloud, answer = reporter_agent
    answer["status"] = 503
    system = start()
    tell(system, CurrentStateObserved(apps("running"), time.time()))

    def pending():
        with Store.open(str(tmp_path / "agent.db"), readonly=True) as store:
            report = store.pending_report("device-state")
            return report is not None and "apps" in report.patch and store.errors()
    errors = wait_for(pending, what="the report queued and its failed sends recorded")
    assert [e["source"] for e in errors] == ["reporter"] and "HTTP 503" in errors[0]["message"]
    system.stop()

    answer["status"] = 200
    start()
    wait_for(lambda: held_by_cloud(cloud).get("apps") == apps("running")["apps"], what="the report sent after restart")

    def settled():
        with Store.open(str(tmp_path / "agent.db"), readonly=True) as store:
            return store.pending_report("device-state") is None and not store.errors() and \
                store.load_accepted("device-state")
    accepted = wait_for(settled, what="the report acknowledged")
    assert accepted == held_by_cloud(cloud)
