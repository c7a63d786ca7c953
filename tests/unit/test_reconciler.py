"""The reconciler's pure core: what starts next, restarts, cancellations, the report; and the wire forms."""
from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

import conf
import messages
from actors.target.engine.adapter import DEFAULT_OPTIONS
from actors.target.engine.worker import (
    state_from_wire,
    state_to_wire,
    step_from_wire,
    step_to_wire,
)
from actors.target.model import STEP_TYPES, Action, Create, EngineState, Pull, Resource, Step
from actors.target.planner import explain, plan
from actors.target.reconciler import ReconcilerSettings, probe_delay, retry_delay
from actors.target.report import report_state
from actors.target.scheduling import finished_restarts, next_steps, obsolete_pulls, restart_steps
from conf.schema import parse
from messages.bus.engine import EngineJobDone, RunEngineJob
from tests.unit.test_planner import (
    IMAGE_1,
    IMAGE_2,
    container_for,
    converged_state,
    service_of,
    target_of,
)

NO_IMAGES = EngineState()
ALL = 100  # slots


def keys(steps: list[Step]) -> list[tuple[str, str | None]]:
    return [(step.action.value, step.service_name) for step in steps]


def test_a_network_or_pull_underway_for_one_service_is_not_started_again_for_another():
    target = target_of({"a": {"image": IMAGE_2}, "b": {"image": IMAGE_2}})
    current = EngineState(images=frozenset({IMAGE_1}))
    first = next_steps(target, current, [], frozenset(), {}, ALL)
    assert keys(first) == [("create_network", "a"), ("pull", "a")]
    # a's steps run: the plan now gives b the network and the pull, which are already underway
    assert next_steps(target, current, first, frozenset(), {}, ALL) == []


def test_services_backing_off_get_no_step_and_slots_bound_the_batch():
    target = target_of({name: {} for name in "abcde"})
    networks = frozenset({Resource("1", "default")})
    current = EngineState(images=frozenset({IMAGE_1}), networks=networks)
    assert keys(next_steps(target, current, [], frozenset({("1", "a")}), {}, 2)) == [("create", "b"), ("create", "c")]
    assert next_steps(target, current, [], frozenset(), {}, 0) == []


def test_a_restart_stops_the_running_container_then_starts_it_again():
    target = target_of({"web": {}, "db": {}})
    current = converged_state(target)
    web = next(c for c in current.containers if c.service_name == "web")
    steps = next_steps(target, current, [], frozenset(), {("1", "web"): "stop"}, ALL)
    assert [(s.action, s.container_id) for s in steps] == [(Action.STOP, web.id)]

    stopped = dataclasses.replace(current, containers=tuple(
        dataclasses.replace(c, status="exited") if c is web else c for c in current.containers))
    for phase in ("start", "stop"):  # stopped by the restart, or found stopped already
        steps = next_steps(target, stopped, [], frozenset(), {("1", "web"): phase}, ALL)
        assert [(s.action, s.container_id) for s in steps] == [(Action.START, web.id)]
        assert finished_restarts(stopped, {("1", "web"): phase}) == set()
    assert finished_restarts(current, {("1", "web"): "start"}) == {("1", "web")}  # running again: done
    assert finished_restarts(EngineState(), {("1", "web"): "stop"}) == {("1", "web")}  # nothing to restart
    assert restart_steps(current, {}) == []


def test_a_new_target_cancels_only_pulls_it_no_longer_needs():
    target = target_of({"a": {"image": IMAGE_2}})
    assert obsolete_pulls(target, {1: IMAGE_2, 2: "other/image:3"}) == [2]


def test_retries_double_up_to_the_cap():
    options = ReconcilerSettings(retry_base=2.0, retry_max=10.0)
    assert [retry_delay(options, count) for count in (1, 2, 3, 4, 50)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_the_report_shows_each_service_and_each_app_s_update_status():
    target = target_of({"web": {}, "db": {"image": IMAGE_2}}, api={"worker": {}})
    web, worker = service_of(target, "web"), service_of(target, "worker", "api")
    gone = container_for(service_of(target_of({"old": {}}), "old"), status="exited")
    current = EngineState(containers=(container_for(web), container_for(worker, "api"), gone),
                           images=frozenset({IMAGE_1}), networks=frozenset({Resource("1", "default"),
                                                                           Resource("api", "default")}))
    pull = Pull("1", "db", "image missing", image=IMAGE_2)
    report = report_state(target, current, explain(target, current), {}, [pull])
    assert report == {"apps": {
        "1": {"update_status": "downloading", "services": {
            "web": {"containerId": "1-web", "image": IMAGE_1, "status": "running"},
            "db": {"image": IMAGE_2, "status": "downloading"},
            "old": {"containerId": "1-old", "image": IMAGE_1, "status": "exited"}}},
        "api": {"update_status": "done", "services": {
            "worker": {"containerId": "api-worker", "image": IMAGE_1, "status": "running"}}}}}

    failed = {("1", "db"): "pull fleetlet-test/busybox:2: not found"}
    report = report_state(target, current, explain(target, current), failed, [])
    assert report["apps"]["1"]["update_status"] == "failed"
    assert report["apps"]["1"]["services"]["db"] == {"image": IMAGE_2, "status": "absent",
                                                     "reason": "pull fleetlet-test/busybox:2: not found"}
    without_old = dataclasses.replace(current, containers=current.containers[:2], images=frozenset({IMAGE_1, IMAGE_2}))
    converging = report_state(target, without_old, explain(target, without_old), {}, [])
    assert converging["apps"]["1"]["update_status"] == "applying"  # db still has no container


def test_steps_and_states_cross_the_wire_unchanged():
    target = target_of({"web": {"ports": ["8080:80/udp"], "environment": {"A": "1"}, "volumes": ["data:/data:ro"],
                                "command": "sh -c 'sleep 1'"}})
    for step in plan(target, EngineState(images=frozenset({IMAGE_1}), networks=frozenset({Resource("1", "default")}),
                                          volumes=frozenset({Resource("1", "data")}))):
        job = messages.decode(messages.encode(RunEngineJob(1, "owner", DEFAULT_OPTIONS, step_to_wire(step), None)))
        assert step_from_wire(job.step) == step
    state = converged_state(target)
    done = messages.decode(messages.encode(EngineJobDone(1, None, False, state_to_wire(state))))
    assert state_from_wire(done.state) == state


def test_the_documented_defaults_are_the_code_defaults():
    assert parse(ReconcilerSettings, conf.defaults("agent")["actors"]["reconciler"]["settings"],
                 "actors.reconciler.settings") == ReconcilerSettings()


def test_an_unreachable_engine_is_probed_at_a_short_capped_backoff():
    delays = [probe_delay(ReconcilerSettings(), probes) for probes in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_only_persistence_escalates_at_its_limit_the_rest_cool_down():
    defaults = conf.defaults("agent")
    assert defaults["supervisor"]["on_limit"] == "cooldown"
    assert [name for name, entry in defaults["actors"].items() if entry.get("on_limit")] == ["persistence"]
    assert defaults["actors"]["persistence"]["on_limit"] == "escalate"


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_every_step_type_crosses_the_wire_as_itself(data):
    service = service_of(target_of({"web": {"ports": ["8080:80"]}}), "web")
    text, names = st.text(min_size=1, max_size=8), st.none() | st.text(min_size=1, max_size=8)
    kind = data.draw(st.sampled_from(sorted(STEP_TYPES.values(), key=lambda kind: kind.action.value)))
    arguments = {"app_id": text, "service_name": names, "reason": text, "resource": text, "image": text,
                 "container_id": text, "service": st.just(service) if kind is Create else st.none() | st.just(service)}
    step = data.draw(st.builds(kind, **{field.name: arguments[field.name] for field in dataclasses.fields(kind)}))
    wire = messages.decode(messages.encode(RunEngineJob(1, "owner", DEFAULT_OPTIONS, step_to_wire(step), None))).step
    assert type(step_from_wire(wire)) is kind and step_from_wire(wire) == step
    assert wire.action == kind.action.value
