"""The release state machine (actors.target.release), the health check field and the planner's hand-over."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.target import release as r
from actors.target.model import EngineState, Resource, Stop
from actors.target.planner import plan
from messages.protocol.target_state import (
    Healthcheck,
    InvalidTargetState,
    config_field_hashes,
    config_hash,
    parse_target_state,
    to_json,
)
from tests.unit.test_planner import IMAGE_1, IMAGE_2, container_for, service_of, target_of

RULES = r.Rules(settle_seconds=10, timeout=300, max_attempts=1, lock_timeout=60, retry_base=2, retry_max=30)
READY = r.Readiness(True)
WAITING = r.Readiness(False, waiting="waiting for 1/web")
FAILING = r.Readiness(False, "1/web: unhealthy: no", ("1", "web"))
DOC = {"apps": {}}


def committed(tid: str = "good") -> r.Release:
    return r.Release(committed=tid, committed_etag=f'"{tid}"', committed_document=DOC)


def test_a_ready_release_is_committed_once_it_has_settled():
    release = r.on_target(committed(), "new", '"new"', now=0)
    assert release.status == r.APPLYING
    release, outcome = r.on_observation(release, "new", DOC, READY, 1, RULES)
    assert release.ready_since == 1 and outcome == r.NOTHING
    release, outcome = r.on_observation(release, "new", DOC, READY, 10.5, RULES)
    assert release.status == r.APPLYING  # 9.5 s of the 10
    release, outcome = r.on_observation(release, "new", DOC, READY, 11, RULES)
    assert outcome.event == "committed" and release.committed == "new" and release.status == r.DONE


def test_not_ready_restarts_the_settle_window():
    release = r.on_target(committed(), "new", None, now=0)
    release, _ = r.on_observation(release, "new", DOC, READY, 1, RULES)
    release, _ = r.on_observation(release, "new", DOC, WAITING, 5, RULES)
    release, _ = r.on_observation(release, "new", DOC, READY, 6, RULES)
    release, outcome = r.on_observation(release, "new", DOC, READY, 12, RULES)
    assert outcome == r.NOTHING and release.ready_since == 6


def test_a_failure_rolls_back_and_the_target_is_not_applied_again_until_another_arrives():
    release = r.on_target(committed(), "bad", '"bad"', now=0)
    release, outcome = r.on_observation(release, "bad", DOC, FAILING, 1, RULES)
    assert outcome.event == r.ROLLED_BACK and release.status == r.ROLLED_BACK
    assert (release.failed_etag, release.failed_service, release.reason) == ('"bad"', ("1", "web"), FAILING.failure)
    assert r.applied_target(release, "bad") == "committed"
    assert r.on_target(release, "bad", '"bad"', now=2) == release  # the same target again: nothing
    newer = r.on_target(release, "other", None, now=3)
    assert newer.applying == "other" and r.applied_target(newer, "other") == "stored"
    assert r.applied_target(r.on_target(newer, "bad", None, now=4), "bad") == "stored"  # after a different one


def test_not_ready_in_time_is_a_failure():
    release = r.on_target(committed(), "slow", None, now=0)
    release, outcome = r.on_observation(release, "slow", DOC, WAITING, 301, RULES)
    assert outcome.event == r.ROLLED_BACK and "not ready within 300 s: waiting for 1/web" in release.reason


def test_the_failure_budget_retries_the_same_target_before_rolling_back():
    rules = dataclasses.replace(RULES, max_attempts=2)
    release = r.on_target(committed(), "bad", None, now=0)
    release, outcome = r.on_observation(release, "bad", DOC, FAILING, 1, rules)
    assert outcome == r.Outcome("retry", (("1", "web"),)) and release.applying == "bad"
    release, outcome = r.on_observation(release, "bad", DOC, FAILING, 2, rules)
    assert outcome.event == r.ROLLED_BACK


def test_a_first_install_retries_with_backoff():
    release = r.on_target(r.Release(), "first", None, now=0)
    release, outcome = r.on_observation(release, "first", DOC, FAILING, 1, RULES)
    assert outcome.event == r.FAILED and release.status == r.FAILED and release.retry_at == 1 + 2
    assert r.on_observation(release, "first", DOC, READY, 2, RULES) == (release, r.NOTHING)  # backing off
    release, outcome = r.on_observation(release, "first", DOC, WAITING, 3, RULES)
    assert outcome == r.Outcome("retry", (("1", "web"),)) and release.status == r.APPLYING
    release, _ = r.on_observation(release, "first", DOC, FAILING, 4, RULES)
    assert release.retry_at == 4 + 4  # the backoff doubles


def test_a_held_lock_holds_the_window():
    release = r.on_target(committed(), "new", None, now=0)
    release, outcome = r.on_observation(release, "new", DOC, WAITING, 400, RULES, locked=True)
    assert outcome.event == r.LOCKED and release.started_at == 400  # no timeout while the lock defers it
    assert r.release_section(release, locked=True)["status"] == r.LOCKED


def test_a_restart_gives_the_attempt_underway_its_whole_window_again():
    release, _ = r.on_observation(r.on_target(committed(), "new", None, now=0), "new", DOC, READY, 5, RULES)
    after_power_cut = r.resumed(release, now=1000)
    assert (after_power_cut.started_at, after_power_cut.ready_since) == (1000, None)
    assert r.on_observation(after_power_cut, "new", DOC, WAITING, 1001, RULES)[1] == r.NOTHING  # no timeout
    assert r.resumed(committed(), 1000) == committed()


def test_a_target_equal_to_the_committed_one_needs_nothing():
    release = r.on_target(committed(), "new", None, now=0)
    assert r.on_target(release, "good", None, now=1).status == r.DONE


def test_the_store_form_round_trips_and_garbage_is_the_empty_release():
    release = r.on_observation(r.on_target(committed(), "bad", None, 0), "bad", DOC, FAILING, 1, RULES)[0]
    assert r.release_from_json(r.release_to_json(release)) == release
    assert r.release_from_json({"committed": "x"}) == r.Release()
    assert r.release_from_json("nonsense") == r.Release()
    stored = r.release_to_json(release)
    for name, wrong in (("attempts", "2"), ("committed_document", {"apps": 3}), ("failed_service", ["1"]),
                        ("started_at", True), ("committed", 7)):
        assert r.release_from_json({**stored, name: wrong}) == r.Release(), name


EVENTS = st.lists(st.one_of(
    st.tuples(st.just("target"), st.sampled_from(["a", "b", "c"])),
    st.tuples(st.just("observe"), st.sampled_from([READY, WAITING, FAILING]), st.booleans()),
    st.tuples(st.just("restart"), st.none())), max_size=40)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(min_value=1, max_value=3), st.booleans())
def test_every_event_sequence_ends_in_a_consistent_state(events, max_attempts, has_committed):
    """Whatever happens, the release is one of its statuses with the fields that status needs; a rolled-back
    target is never applied again until a different target arrived; a restart (the store's form) resumes it."""
    rules = dataclasses.replace(RULES, max_attempts=max_attempts)
    release = committed("a") if has_committed else r.Release()
    now, stored = 0.0, "a" if has_committed else None
    for event in events:
        now += 7.0
        blocked_before = release.blocked
        if event[0] == "target":
            stored = event[1]
            release = r.on_target(release, stored, None, now)
            if blocked_before == stored:
                assert release.blocked == stored  # the same target again: still not applied
        elif event[0] == "observe" and stored is not None:
            release, _ = r.on_observation(release, stored, DOC, event[1], now, rules, locked=event[2])
        else:
            release = r.release_from_json(r.release_to_json(release))
        status = release.status
        assert status in (r.NONE, r.DONE, r.APPLYING, r.FAILED, r.ROLLED_BACK)
        if release.blocked is not None:
            assert release.committed is not None and release.applying is None and status == r.ROLLED_BACK
            assert stored is not None and r.applied_target(release, stored) in ("committed", "stored")
            assert r.applied_target(release, release.blocked) == "committed"
        if release.applying is not None:
            assert release.applying == stored and release.blocked is None
        if status == r.FAILED:
            assert release.committed is None  # only a first install waits to retry; otherwise it rolls back
        assert release.attempts < max_attempts or release.committed is None


# -- readiness on the engine's view ------------------------------------------------------------------------

HEALTH = {"healthcheck": {"test": ["CMD", "/bin/true"], "interval": "1s"}}


@pytest.mark.parametrize("fields, ready, failure", [
    ({"health": "healthy"}, True, ""),
    ({"health": "starting"}, False, ""),
    ({"health": "unhealthy", "health_output": "boom"}, False, "1/web: unhealthy: boom"),
    ({"status": "restarting", "exit_code": 2, "restart_count": 4}, False,
     "1/web: crash-looping (exit code 2, 4 restarts)"),
    ({"status": "exited", "exit_code": 3}, False, "1/web: exited with code 3"),
    ({"status": "exited", "exit_code": 0}, True, ""),  # a one-shot that completed
    ({"status": "created"}, False, ""),
])
def test_readiness_of_a_service(fields, ready, failure):
    target = target_of({"web": {**HEALTH, "restart": "on-failure"}})
    current = EngineState(containers=(container_for(service_of(target, "web"), **fields),))
    judged = r.readiness(target, current, converged=True)
    assert (judged.ready, judged.failure) == (ready, failure)


def test_a_container_stopped_by_hand_under_restart_always_is_not_ready_but_no_failure():
    target = target_of({"web": {}})
    stopped = container_for(service_of(target, "web"), status="exited", exit_code=137)
    judged = r.readiness(target, EngineState(containers=(stopped,)), converged=True)
    assert (judged.ready, judged.failure, judged.waiting) == (False, "", "waiting for 1/web")


def test_a_container_of_another_config_is_not_ready_and_unconverged_is_not_ready():
    target = target_of({"web": {}})
    old = container_for(service_of(target_of({"web": {"environment": {"A": "1"}}}), "web"))
    assert r.readiness(target, EngineState(containers=(old,)), True).waiting == "waiting for 1/web"
    mine = container_for(service_of(target, "web"))
    assert r.readiness(target, EngineState(containers=(mine,)), False).waiting == "steps pending"


def test_a_lock_counts_only_while_an_opted_in_container_of_its_app_runs():
    target = target_of({"web": {"labels": {"fleetlet.update-lock": "true"}}, "db": {}})
    web, db = service_of(target, "web"), service_of(target, "db")
    running = EngineState(containers=(container_for(web), container_for(db)))
    assert r.locked_apps(target, running, "fleetlet.update-lock", lambda app: True) == {"1"}
    gone = EngineState(containers=(container_for(web, status="exited"), container_for(db)))
    assert r.locked_apps(target, gone, "fleetlet.update-lock", lambda app: True) == frozenset()
    assert r.locked_apps(target, running, "fleetlet.update-lock", lambda app: False) == frozenset()


def test_locked_apps_defer_their_stops_unless_overridden_after_the_timeout():
    stop = Stop("1", "web", "outdated", "c1")
    assert r.defer_for_locks([stop], frozenset({"1"})) == ([], [stop])
    assert r.defer_for_locks([stop], frozenset({"2"})) == ([stop], [])
    target = target_of({"web": {}})
    assert r.deferred(target, {"1": 0.0}, 100.0, RULES) == {"1"}
    overriding = dataclasses.replace(target, override_lock=True)
    assert r.deferred(overriding, {"1": 0.0}, 59.0, RULES) == {"1"}
    assert r.deferred(overriding, {"1": 0.0}, 60.0, RULES) == frozenset()


# -- the planner's hand-over ---------------------------------------------------------------------------------

def engine(*containers, images=frozenset({IMAGE_1, IMAGE_2})) -> EngineState:
    return EngineState(containers=containers, images=images, networks=frozenset({Resource("1", "default")}))


def test_a_hand_over_starts_the_new_container_beside_the_old_and_stops_the_old_once_ready():
    old_target = target_of({"web": {"update_strategy": "hand-over"}})
    new_target = target_of({"web": {"update_strategy": "hand-over", "image": IMAGE_2}})
    old = container_for(service_of(old_target, "web"), id="old")
    steps = plan(new_target, engine(old))
    assert [step.action.value for step in steps] == ["create"]
    starting = container_for(service_of(new_target, "web"), id="new", status="created")
    assert [s.action.value for s in plan(new_target, engine(old, starting))] \
        == ["start"]
    unready = dataclasses.replace(starting, status="running", health="starting")
    assert plan(new_target, engine(old, unready)) == []
    ready = dataclasses.replace(unready, health="healthy")
    assert [(s.action.value, s.container_id) for s in plan(new_target, engine(old, ready))] == [("stop", "old")]


def test_a_hand_over_pulls_first():
    old_target = target_of({"web": {"update_strategy": "hand-over"}})
    new_target = target_of({"web": {"update_strategy": "hand-over", "image": IMAGE_2}})
    old = container_for(service_of(old_target, "web"))
    assert [s.action.value for s in plan(new_target, engine(old, images=frozenset({IMAGE_1})))] == ["pull"]


# -- the health check field --------------------------------------------------------------------------------

def config_with(healthcheck: object) -> dict:
    return {"apps": {"1": {"services": [{"serviceName": "web", "config": {"image": IMAGE_1,
                                                                             "healthcheck": healthcheck}}]}}}


def test_a_healthcheck_is_normalised_and_round_trips():
    target = parse_target_state(config_with({"test": "test -f /tmp/ok", "interval": "1m30s", "timeout": 2,
                                             "retries": 3, "start_period": "500ms"}))
    check = target.apps[0].services[0].config.healthcheck
    assert check == Healthcheck(("CMD-SHELL", "test -f /tmp/ok"), 90 * 10**9, 2 * 10**9, 3, 500 * 10**6)
    assert parse_target_state(to_json(target)) == target
    disabled = parse_target_state(config_with({"disable": True})).apps[0].services[0].config.healthcheck
    assert disabled == Healthcheck(("NONE",)) and disabled.disabled


def test_a_healthcheck_is_part_of_the_config_hash_only_when_set():
    plain = parse_target_state(config_with(None)).apps[0].services[0]
    checked = parse_target_state(config_with({"test": ["CMD", "true"]})).apps[0].services[0]
    assert config_hash(plain) != config_hash(checked)
    # A service without one hashes as before the field existed, so no container is recreated by the upgrade.
    assert "healthcheck" not in config_field_hashes(plain) and "healthcheck" in config_field_hashes(checked)


@pytest.mark.parametrize("healthcheck, message", [
    ({"interval": "1s"}, "healthcheck.test: required field is missing"),
    ({"test": ["RUN", "x"]}, "healthcheck.test: must be a string or a list starting with CMD"),
    ({"test": ["CMD"]}, "healthcheck.test: CMD needs a command"),
    ({"test": "true", "interval": "1 second"}, "healthcheck.interval: '1 second' is not a duration"),
    ({"test": "true", "interval": "0s"}, "healthcheck.interval: '0s' is outside 1ms-24h"),
    ({"test": "true", "retries": -1}, "healthcheck.retries: must be an integer from 0 to 1000"),
    ({"disable": True, "test": "true"}, "healthcheck: disable: true takes no other field"),
    ({"test": "true", "every": 1}, "healthcheck.every: unknown field"),
])
def test_a_bad_healthcheck_is_refused_naming_its_path(healthcheck, message):
    with pytest.raises(InvalidTargetState, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_target_state(config_with(healthcheck))


@pytest.mark.parametrize("strategy, first", [("delete-then-download", "stop"), ("kill-then-download", "stop"),
                                             ("download-then-kill", "pull")])
def test_delete_then_download_removes_the_old_container_before_the_pull(strategy, first):
    old = container_for(service_of(target_of({"web": {"update_strategy": strategy}}), "web"))
    new_target = target_of({"web": {"update_strategy": strategy, "image": IMAGE_2}})
    assert [s.action.value for s in plan(new_target, engine(old, images=frozenset({IMAGE_1})))] == [first]
