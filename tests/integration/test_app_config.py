"""The built-in application-config shadow handler: pure planning, the atomic file, and the actor."""
from __future__ import annotations

import json
import os
import stat

import pytest

import conf
import messages
from actors.shadow.app_config import (
    RESTART_MARKER_SUFFIX,
    AppConfigSettings,
    plan_config,
    read_config,
    reported_state,
    wants_restart,
    write_atomically,
)
from conf.schema import parse
from messages.bus.shadow import ShadowDeltaUpdated
from store import Store
from tests.integration.test_supervision import agent_config
from tests.support.polling import wait_for
from tests.support.probe_actors import recorded_rows

WHERE = "actors.app_config.settings"
APP = AppConfigSettings(path="/unused", keys=("t", "mode", "features"), app_id="1", services=("app", "worker"),
                        ranges=(("t", 16.0, 30.0),))


def test_plan_takes_the_whole_desired_value_of_each_owned_key_in_the_delta():
    current = {"t": 20, "mode": "eco", "features": {"a": True, "b": False}, "other": 1}
    delta = {"features": {"b": True}, "unowned": 5}
    desired = {"t": 20, "mode": "eco", "features": {"a": True, "b": True}, "unowned": 5}
    content, failures = plan_config(current, delta, desired, APP)
    assert content == {"t": 20, "mode": "eco", "features": {"a": True, "b": True}, "other": 1}
    assert failures == {}


@pytest.mark.parametrize("wanted, applied, failure", [
    (24, 24, None), (35, 30, "35 is outside 16..30; applied 30"), (10.5, 16.0, "10.5 is outside 16..30; applied 16"),
    ("hot", 20, '"hot" is not a number; kept 20'), (True, 20, "true is not a number; kept 20"),
])
def test_out_of_range_values_are_clamped_and_the_reason_kept(wanted, applied, failure):
    content, failures = plan_config({"t": 20}, {"t": wanted}, {"t": wanted}, APP)
    assert content["t"] == applied and type(content["t"]) is type(applied)
    assert failures.get("t") == failure


def test_reports_what_the_file_holds_and_the_restart_flag_as_desired():
    assert reported_state({"t": 30, "extra": 1}, {"t": 35, "requiresRestart": True}, APP) == \
        {"t": 30, "mode": None, "features": None, "requiresRestart": True}


def test_restarts_when_asked_or_when_a_value_changed_under_the_standing_flag():
    assert wants_restart({"requiresRestart": True}, {"requiresRestart": True}, False, APP)
    assert wants_restart({"t": 24}, {"t": 24, "requiresRestart": True}, True, APP)
    assert not wants_restart({"t": 24}, {"t": 24, "requiresRestart": True}, False, APP)
    assert not wants_restart({"t": 24}, {"t": 24}, True, APP)
    assert not wants_restart({"requiresRestart": True}, {}, True, AppConfigSettings("/x", ("t",)))  # no services


def test_settings_are_checked():
    assert parse(AppConfigSettings, {"path": "a.json", "keys": ["t"], "ranges": {"t": [1, 2]}}, WHERE).ranges == \
        (("t", 1.0, 2.0),)
    for bad, message in [({"keys": ["t"]}, "path"), ({"path": "a", "keys": []}, "keys"),
                         ({"path": "a", "keys": ["t"], "ranges": {"u": [1, 2]}}, "ranges.u"),
                         ({"path": "a", "keys": ["t"], "ranges": {"t": [3, 2]}}, "ranges.t"),
                         ({"path": "a", "keys": ["t"], "services": "app"}, "services"),
                         ({"path": "a", "keys": ["t"], "colour": "red"}, "unknown")]:
        with pytest.raises(conf.ConfigError, match=message):
            parse(AppConfigSettings, bad, WHERE)


def test_the_file_is_replaced_atomically_and_readable_by_the_application(tmp_path):
    path = str(tmp_path / "sub" / "config.json")
    write_atomically(path, b'{"t": 1}', 0o640)
    write_atomically(path, b'{"t": 2}', 0o640)
    assert read_config(path) == {"t": 2}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.listdir(tmp_path / "sub") == ["config.json"]  # no temp file left


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = str(tmp_path / "config.json")
    write_atomically(path, b'{"t": 1}', 0o640)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        write_atomically(path, b'{"t": 2}', 0o640)
    assert read_config(path) == {"t": 1}
    assert os.listdir(tmp_path) == ["config.json"]


def test_a_corrupt_or_missing_file_reads_as_empty(tmp_path):
    assert read_config(str(tmp_path / "missing.json")) == {}
    (tmp_path / "bad.json").write_text("[1, 2")
    assert read_config(str(tmp_path / "bad.json")) == {}


# -- the actor -------------------------------------------------------------------------------------------------

def recorded(tmp_path, kind):
    rows = recorded_rows(tmp_path / "recorded.jsonl")
    return [row for row in rows if row["type"] == kind]


@pytest.fixture
def handler_system(tmp_path, port, start_agent):
    def start(persistence: bool = True):
        actors = {
            "app_config": {"class": "actors.shadow.app_config.AppConfig",
                           "subscribes": ["ShadowDeltaUpdated", "RestartsRecorded"],
                           "settings": {"path": str(tmp_path / "app.json"), "keys": ["t", "mode"], "app_id": "1",
                                        "services": ["app"], "ranges": {"t": [16, 30]}}},
            "recorder": {"class": "tests.support.probe_actors.Recorder",
                         "subscribes": ["ShadowDeltaApplied", "RestartServices", "RestartsRecorded"],
                         "settings": {"path": str(tmp_path / "recorded.jsonl")}},
        }
        if persistence:
            actors["persistence"] = {"class": "actors.persistence.Persistence", "subscribes": ["RestartServices"]}
        return start_agent(agent_config(tmp_path, port, actors))

    return start


def test_the_actor_writes_reports_and_asks_for_a_restart(handler_system, tmp_path):
    system = handler_system()
    tell = lambda msg: system.asys.tell(system.supervisor, messages.encode(msg))  # noqa: E731
    thing = conf.load("agent")["device"]["thing"]
    desired = {"t": 35, "mode": "cool", "requiresRestart": True, "ghost": 1}
    tell(ShadowDeltaUpdated(thing, "", 4, desired, desired))
    (answer,) = wait_for(lambda: recorded(tmp_path, "ShadowDeltaApplied"), what="the answer")
    assert answer["reported"] == {"t": 30, "mode": "cool", "requiresRestart": True}
    assert answer["failures"] == {"t": "35 is outside 16..30; applied 30"} and answer["version"] == 4
    assert read_config(str(tmp_path / "app.json")) == {"t": 30, "mode": "cool"}
    (restart,) = wait_for(lambda: recorded(tmp_path, "RestartServices"), what="the restart")
    assert restart["app_id"] == "1" and restart["services"] == ["app"] and "changed (mode, t)" in restart["reason"]
    wait_for(lambda: recorded(tmp_path, "RestartsRecorded"), what="the restart durable")
    wait_for(lambda: not os.path.exists(str(tmp_path / "app.json") + RESTART_MARKER_SUFFIX), what="the marker gone")
    with Store.open(str(tmp_path / "agent.db"), readonly=True) as store:
        assert [(r.app_id, r.service_name) for r in store.pending_restarts()] == [("1", "app")]

    tell(ShadowDeltaUpdated(thing, "named", 5, {"t": 20}, {"t": 20}))  # another shadow: answered, not applied
    tell(ShadowDeltaUpdated(thing, "", 6, {"t": 36}, {**desired, "t": 36}))  # clamps to the same value: no restart
    wait_for(lambda: len(recorded(tmp_path, "ShadowDeltaApplied")) == 3, what="two more answers")
    named, same = recorded(tmp_path, "ShadowDeltaApplied")[1:]
    assert (named["shadow_name"], named["reported"]) == ("named", {})
    assert same["reported"]["t"] == 30 and len(recorded(tmp_path, "RestartServices")) == 1


def test_the_marker_stays_until_the_restart_request_is_durable(handler_system, tmp_path):
    system = handler_system(persistence=False)  # nobody makes the request durable
    thing = conf.load("agent")["device"]["thing"]
    desired = {"t": 20, "requiresRestart": True}
    system.asys.tell(system.supervisor, messages.encode(ShadowDeltaUpdated(thing, "", 4, desired, desired)))
    wait_for(lambda: recorded(tmp_path, "RestartServices"), what="the restart asked for")
    wait_for(lambda: recorded(tmp_path, "ShadowDeltaApplied"), what="the answer")
    assert os.path.exists(str(tmp_path / "app.json") + RESTART_MARKER_SUFFIX)


def test_a_restart_decided_before_a_crash_is_asked_for_at_the_next_start(handler_system, tmp_path):
    marker = tmp_path / ("app.json" + RESTART_MARKER_SUFFIX)
    marker.write_text(json.dumps({"reason": "app.json changed (t) at shadow version 9"}))
    handler_system()
    (restart,) = wait_for(lambda: recorded(tmp_path, "RestartServices"), what="the restart after a crash")
    assert restart["reason"] == "app.json changed (t) at shadow version 9"
    wait_for(lambda: not marker.exists(), what="the marker removed")
