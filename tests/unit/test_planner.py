import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.target.model import ACTIVE_STATUSES, Action, ContainerInfo, EngineState, Resource, Step
from actors.target.planner import explain, plan, waits_for_health
from messages.protocol.target_state import (
    Service,
    TargetState,
    config_field_hashes,
    config_hash,
    parse_target_state,
)

IMAGE_1 = "fleetlet-test/busybox:1"
IMAGE_2 = "fleetlet-test/busybox:2"


def target_of(services: dict[str, dict], app_id: str = "1", **more_apps: dict[str, dict]) -> TargetState:
    """A target from {service name: config}; the image defaults to IMAGE_1."""
    apps = {app_id: services, **more_apps}
    return parse_target_state({"apps": {app: {"services": [
        {"serviceName": name, "config": {"image": IMAGE_1, **config}} for name, config in app_services.items()]}
        for app, app_services in apps.items()}})


def service_of(target: TargetState, name: str, app_id: str = "1") -> Service:
    return target.app(app_id).service(name)


def container_for(service: Service, app_id: str = "1", status: str = "running", id: str | None = None,
                  **fields) -> ContainerInfo:
    """A container as the engine would report one created for `service` (override fields to make it stale)."""
    return ContainerInfo(**{
        "id": id or f"{app_id}-{service.service_name}", "name": f"{app_id}_{service.service_name}",
        "app_id": app_id, "service_name": service.service_name, "config_hash": config_hash(service),
        "image": service.config.image, "status": status, "exit_code": 0 if status == "exited" else None,
        "networks": frozenset(service.config.networks),
        "field_hashes": tuple(sorted(config_field_hashes(service).items())), **fields})


def resources_for(target: TargetState) -> tuple[frozenset[Resource], frozenset[Resource]]:
    networks = {Resource(app.app_id, network) for app in target.apps for service in app.services
                for network in service.config.networks}
    volumes = {Resource(app.app_id, mount.volume) for app in target.apps for service in app.services
               for mount in service.config.volumes}
    return frozenset(networks), frozenset(volumes)


def converged_state(target: TargetState, images=frozenset({IMAGE_1, IMAGE_2})) -> EngineState:
    networks, volumes = resources_for(target)
    containers = tuple(container_for(service, app.app_id, "running" if service.config.running else "exited")
                       for app in target.apps for service in app.services)
    return EngineState(containers=containers, images=frozenset(images), networks=networks, volumes=volumes)


def actions(steps: list[Step]) -> list[tuple[str, str | None]]:
    return [(step.action.value, step.service_name) for step in steps]


# --- the executor model: a pure stand-in for the engine, used to run plans to the end ----------------------------


def apply_step(current: EngineState, step: Step) -> EngineState:
    """The engine's effect of one step; asserts the step makes sense in `current` (so the planner is checked too)."""
    containers = {container.id: container for container in current.containers}
    resource = Resource(step.app_id, getattr(step, "resource", ""))
    if step.action is Action.CREATE_NETWORK:
        assert resource not in current.networks
        return dataclasses.replace(current, networks=current.networks | {resource})
    if step.action is Action.CREATE_VOLUME:
        assert resource not in current.volumes
        return dataclasses.replace(current, volumes=current.volumes | {resource})
    if step.action is Action.PULL:
        assert step.image not in current.images
        return dataclasses.replace(current, images=current.images | {step.image})
    if step.action is Action.REMOVE_NETWORK:
        assert resource in current.networks
        assert not any(c.app_id == step.app_id and step.resource in c.networks for c in current.containers)
        return dataclasses.replace(current, networks=current.networks - {resource})
    if step.action is Action.REMOVE_VOLUME:
        assert resource in current.volumes
        assert not any(c.app_id == step.app_id for c in current.containers)
        return dataclasses.replace(current, volumes=current.volumes - {resource})
    if step.action is Action.CREATE:
        service, config = step.service, step.service.config
        assert config.image in current.images
        assert all(Resource(step.app_id, network) in current.networks for network in config.networks)
        assert all(Resource(step.app_id, mount.volume) in current.volumes for mount in config.volumes)
        created = dataclasses.replace(container_for(service, step.app_id, "created"),
                                      id=f"new-{step.app_id}-{service.service_name}-{config_hash(service)[:8]}")
        assert created.name not in {c.name for c in current.containers}
        containers[created.id] = created
    else:
        container = containers[step.container_id]
        if step.action is Action.START:
            assert container.status in ("created", "exited")
            # A container with a health check starts "starting"; `health_checks_pass` plays the checks passing.
            health = "" if step.service.config.healthcheck is None else "starting"
            containers[container.id] = dataclasses.replace(container, status="running", exit_code=None, health=health)
        elif step.action is Action.STOP:
            assert container.status in ACTIVE_STATUSES
            containers[container.id] = dataclasses.replace(container, status="exited", exit_code=0)
        else:
            assert step.action is Action.REMOVE and container.status not in ACTIVE_STATUSES
            del containers[container.id]
    return dataclasses.replace(current, containers=tuple(sorted(containers.values(), key=lambda c: c.id)))


def normalised(current: EngineState) -> EngineState:
    return dataclasses.replace(current, containers=tuple(sorted(current.containers, key=lambda c: c.id)))


def health_checks_pass(current: EngineState) -> EngineState:
    """Time passes: every running container whose health check has not passed yet becomes healthy."""
    return dataclasses.replace(current, containers=tuple(
        dataclasses.replace(c, health="healthy") if c.status == "running" and c.health not in ("", "healthy") else c
        for c in current.containers))


def run_to_end(target: TargetState, current: EngineState, max_batches: int = 40,
               fail=lambda step: False) -> tuple[EngineState, list[list[Step]]]:
    """Plan, check the batch is really parallel, apply it, re-plan: until plan() is [] (bounded). When nothing
    is left to do but wait for health checks, they pass, and planning goes on."""
    failed: set = set()
    batches = []
    for _ in range(max_batches):
        batch = plan(target, current, frozenset(failed))
        if not batch and (healthy := health_checks_pass(current)) != current:
            current = healthy
            continue
        if not batch:
            return current, batches
        batches.append(batch)
        check_batch(target, current, batch, failed)
        for step in batch:
            apply_step(current, step)  # every step is valid against the state the batch was planned on
        failing = [step for step in batch if fail(step)]
        succeeded = [step for step in batch if step not in failing]
        failed |= {step.key for step in failing}
        forward = current
        for step in succeeded:
            forward = apply_step(forward, step)
        backward = current
        for step in reversed(succeeded):
            backward = apply_step(backward, step)
        assert normalised(forward) == normalised(backward), "steps of one batch do not commute"
        current = forward
    raise AssertionError(f"no convergence after {max_batches} batches: {batches[-3:]}")


def dependency_ready(target: TargetState, current: EngineState, app_id: str, name: str, condition: str) -> bool:
    service = service_of(target, name, app_id)
    if condition == "service_healthy":
        return any(c.app_id == app_id and c.service_name == name and c.config_hash == config_hash(service)
                   and c.status == "running" and c.health == "healthy" for c in current.containers)
    return any(c.app_id == app_id and c.service_name == name and c.config_hash == config_hash(service)
               and (c.status == "running" or (c.status == "exited" and c.exit_code == 0
                                              and service.config.restart in ("no", "on-failure")))
               for c in current.containers)


def check_batch(target: TargetState, current: EngineState, batch: list[Step], failed: set) -> None:
    known = {container.id: container for container in current.containers}
    for step in batch:
        assert step.key not in failed
        assert step.reason
        if getattr(step, "container_id", None) is not None:
            assert step.container_id in known, "a step names a container that is not ours"
        starts = step.action is Action.START or (step.action is Action.CREATE and step.service.config.running)
        if starts:
            assert all(dependency_ready(target, current, step.app_id, dependency, condition)
                       for dependency, condition in step.service.config.depends_on), f"{step} before its dependencies"
        if step.action is Action.STOP and step.service is not None:
            stale = known[step.container_id].config_hash != config_hash(step.service)
            if stale and step.service.config.update_strategy == "download-then-kill":
                assert step.service.config.image in current.images, "old container killed before the download"


def assert_converged(target: TargetState, current: EngineState) -> None:
    remaining = list(current.containers)
    for app in target.apps:
        for service in app.services:
            mine = [c for c in remaining if (c.app_id, c.service_name) == (app.app_id, service.service_name)]
            assert len(mine) == 1, f"{app.app_id}/{service.service_name}: {mine}"
            (container,) = mine
            remaining.remove(container)
            assert container.config_hash == config_hash(service)
            assert container.networks == frozenset(service.config.networks)
            if not service.config.running:
                assert container.status not in ACTIVE_STATUSES
            elif service.config.restart == "no" or (service.config.restart == "on-failure"
                                                     and container.exit_code == 0):
                assert container.status in ("running", "exited")
            else:
                assert container.status == "running"
    assert remaining == [], "containers of services not in the target remain"
    networks, volumes = resources_for(target)
    assert current.networks == networks
    assert volumes <= current.volumes
    assert all(target.app(volume.app_id) is not None for volume in current.volumes)


# --- unit tests ------------------------------------------------------------------------------------------------


def test_nothing_to_do_for_an_empty_target_and_engine():
    assert plan(TargetState(), EngineState()) == []


def test_fresh_deploy_creates_the_network_then_the_container_then_starts_it():
    target = target_of({"web": {}})
    current = EngineState(images=frozenset({IMAGE_1}))
    first = plan(target, current)
    assert actions(first) == [("create_network", "web")]
    assert first[0].resource == "default" and first[0].reason == "network default missing (needed by web)"
    current = apply_step(current, first[0])
    (create,) = plan(target, current)
    assert (create.action, create.service, create.reason) == (Action.CREATE, service_of(target, "web"), "no container")
    current = apply_step(current, create)
    (start,) = plan(target, current)
    assert (start.action, start.reason) == (Action.START, "container not started")
    assert start.container_id == create_id(current)
    assert plan(target, apply_step(current, start)) == []


def create_id(current: EngineState) -> str:
    (container,) = current.containers
    return container.id


def test_missing_image_is_pulled_in_parallel_with_creating_networks_and_volumes():
    target = target_of({"web": {"image": IMAGE_2, "volumes": ["data:/data"], "networks": ["front"]}})
    batch = plan(target, EngineState(images=frozenset({IMAGE_1})))
    assert sorted(actions(batch)) == [("create_network", "web"), ("create_volume", "web"), ("pull", "web")]
    pull = next(step for step in batch if step.action is Action.PULL)
    assert (pull.image, pull.reason) == (IMAGE_2, f"image {IMAGE_2} missing")


def test_a_converged_state_plans_nothing_and_explains_itself():
    target = target_of({"db": {}, "web": {"depends_on": ["db"], "running": False}, "job": {"restart": "no"}})
    current = converged_state(target)
    assert plan(target, current) == []
    assert {(entry["service_name"], entry["status"]) for entry in explain(target, current)} == {
        ("db", "converged"), ("web", "converged"), ("job", "converged")}


def test_an_environment_change_recreates_only_that_service():
    before = target_of({"db": {"environment": {"A": "1"}}, "web": {}})
    after = target_of({"db": {"environment": {"A": "2"}}, "web": {}})
    current = converged_state(before)
    (stop,) = plan(after, current)
    assert (stop.action, stop.service_name, stop.container_id, stop.reason) == (
        Action.STOP, "db", "1-db", "environment changed")
    final, batches = run_to_end(after, current)
    assert [actions(batch) for batch in batches] == [
        [("stop", "db")], [("remove", "db")], [("create", "db")], [("start", "db")]]
    assert_converged(after, final)
    assert container_of(final, "web") == container_of(current, "web")


def container_of(current: EngineState, name: str) -> ContainerInfo:
    (container,) = [c for c in current.containers if c.service_name == name]
    return container


def test_change_reasons_name_every_changed_field_and_the_image():
    before = target_of({"web": {"ports": ["80:80"], "command": ["sleep", "1"]}})
    after = target_of({"web": {"image": IMAGE_2, "ports": ["81:80"], "command": ["sleep", "2"]}})
    (stop,) = plan(after, converged_state(before))
    assert stop.reason == f"image changed ({IMAGE_1} -> {IMAGE_2}); ports, command changed"
    unexplained = dataclasses.replace(container_for(service_of(before, "web")), field_hashes=())
    (stop,) = plan(target_of({"web": {"ports": ["81:80"]}}),
                   dataclasses.replace(converged_state(before), containers=(unexplained,)))
    assert stop.reason == "configuration changed"


def test_download_then_kill_pulls_while_the_old_container_runs():
    current = converged_state(target_of({"web": {}}), images={IMAGE_1})
    target = target_of({"web": {"image": IMAGE_2}})
    final, batches = run_to_end(target, current)
    assert [actions(batch) for batch in batches] == [
        [("pull", "web")], [("stop", "web")], [("remove", "web")], [("create", "web")], [("start", "web")]]
    assert batches[0][0].reason == f"image changed ({IMAGE_1} -> {IMAGE_2}): image {IMAGE_2} missing, " \
                                   "pulled before stopping"
    assert_converged(target, final)


def test_kill_then_download_stops_the_old_container_first():
    current = converged_state(target_of({"web": {}}), images={IMAGE_1})
    target = target_of({"web": {"image": IMAGE_2, "update_strategy": "kill-then-download"}})
    final, batches = run_to_end(target, current)
    assert [actions(batch) for batch in batches] == [
        [("stop", "web")], [("remove", "web")], [("pull", "web")], [("create", "web")], [("start", "web")]]
    assert_converged(target, final)


@pytest.mark.parametrize("strategy", ["download-then-kill", "kill-then-download"])
def test_no_pull_when_the_new_image_is_present(strategy):
    current = converged_state(target_of({"web": {}}))
    target = target_of({"web": {"image": IMAGE_2, "update_strategy": strategy}})
    _, batches = run_to_end(target, current)
    assert [actions(batch) for batch in batches] == [
        [("stop", "web")], [("remove", "web")], [("create", "web")], [("start", "web")]]


def test_running_false_stops_without_recreating():
    current = converged_state(target_of({"web": {}}))
    target = target_of({"web": {"running": False}})
    (stop,) = plan(target, current)
    assert (stop.action, stop.container_id, stop.reason) == (Action.STOP, "1-web", "service is set to running: false")
    final, _ = run_to_end(target, current)
    assert container_of(final, "web").id == "1-web"
    assert_converged(target, final)


def test_a_stopped_service_is_created_but_not_started():
    target = target_of({"web": {"running": False}})
    final, batches = run_to_end(target, EngineState(images=frozenset({IMAGE_1})))
    assert [actions(batch) for batch in batches] == [[("create_network", "web")], [("create", "web")]]
    assert container_of(final, "web").status == "created"


def test_dependents_are_created_only_once_their_dependencies_run():
    target = target_of({"db": {}, "api": {"depends_on": ["db"]}, "web": {"depends_on": ["api", "db"]}})
    current = EngineState(images=frozenset({IMAGE_1}), networks=frozenset({Resource("1", "default")}))
    assert actions(plan(target, current)) == [("create", "db")]
    assert {(entry["service_name"], entry["status"], entry["reason"]) for entry in explain(target, current)} == {
        ("db", "pending", "no container"),
        ("api", "waiting", "waiting for dependencies: db"),
        ("web", "waiting", "waiting for dependencies: api, db")}
    final, batches = run_to_end(target, current)
    assert [actions(batch) for batch in batches] == [
        [("create", "db")], [("start", "db")], [("create", "api")], [("start", "api")],
        [("create", "web")], [("start", "web")]]
    assert_converged(target, final)


def test_a_dependency_being_updated_holds_back_its_dependents_start():
    old = target_of({"db": {}, "web": {"depends_on": ["db"]}})
    new = target_of({"db": {"environment": {"V": "2"}}, "web": {"depends_on": ["db"]}})
    current = converged_state(old)
    current = dataclasses.replace(current, containers=(
        container_of(current, "db"), dataclasses.replace(container_of(current, "web"), status="exited", exit_code=1)))
    assert actions(plan(new, current)) == [("stop", "db")]
    final, _ = run_to_end(new, current)
    assert_converged(new, final)


HEALTHY_DB = {"healthcheck": {"test": ["CMD", "true"], "interval": "1s"}}


def with_health(current: EngineState, name: str, health: str, status: str = "running") -> EngineState:
    return dataclasses.replace(current, containers=tuple(
        dataclasses.replace(c, health=health, status=status) if c.service_name == name else c
        for c in current.containers))


def test_a_service_healthy_dependent_is_created_only_once_its_dependency_is_healthy():
    target = target_of({"db": HEALTHY_DB, "web": {"depends_on": {"db": {"condition": "service_healthy"}}}})
    current = dataclasses.replace(converged_state(target), containers=(
        container_for(service_of(target, "db"), health="starting"),))
    for health in ("starting", "unhealthy"):
        waiting = with_health(current, "db", health)
        assert plan(target, waiting) == []
        assert {(row["service_name"], row["status"], row["reason"]) for row in explain(target, waiting)} == {
            ("db", "converged", "matches target"), ("web", "waiting", "waiting for db to be healthy")}
        assert waits_for_health(explain(target, waiting))
    assert actions(plan(target, with_health(current, "db", "healthy"))) == [("create", "web")]
    assert not waits_for_health(explain(target, with_health(current, "db", "healthy")))
    assert not waits_for_health(explain(target_of({"db": {}, "web": {"depends_on": ["db"]}}),
                                        EngineState(images=frozenset({IMAGE_1}))))  # waits, but not for health
    # healthy but no longer running, or not up to date: not a dependency to start on
    assert plan(target, with_health(current, "db", "healthy", status="restarting")) == []
    stale = dataclasses.replace(container_for(service_of(target, "db"), health="healthy"), config_hash="old")
    assert actions(plan(target, dataclasses.replace(current, containers=(stale,)))) == [("stop", "db")]


def test_a_created_service_healthy_dependent_is_started_only_once_its_dependency_is_healthy():
    target = target_of({"db": HEALTHY_DB, "web": {"depends_on": {"db": {"condition": "service_healthy"}}}})
    current = dataclasses.replace(converged_state(target), containers=(
        container_for(service_of(target, "db"), health="starting"),
        container_for(service_of(target, "web"), status="created")))
    assert plan(target, current) == []
    assert actions(plan(target, with_health(current, "db", "healthy"))) == [("start", "web")]


def test_a_service_started_dependency_does_not_wait_for_health():
    target = target_of({"db": HEALTHY_DB, "api": {"depends_on": ["db"]},
                        "web": {"depends_on": {"db": {"condition": "service_healthy"}, "api": {}}}})
    current = dataclasses.replace(converged_state(target), containers=(
        container_for(service_of(target, "db"), health="starting"),))
    assert actions(plan(target, current)) == [("create", "api")]
    reasons = {row["service_name"]: row["reason"] for row in explain(target, current)}
    assert reasons["web"] == "waiting for dependencies: api and db to be healthy"
    final, batches = run_to_end(target, current)
    assert [actions(batch) for batch in batches] == [
        [("create", "api")], [("start", "api")], [("create", "web")], [("start", "web")]]
    assert_converged(target, final)


def test_a_completed_one_shot_dependency_lets_dependents_start():
    target = target_of({"init": {"restart": "no"}, "web": {"depends_on": ["init"]}})
    current = converged_state(target)
    current = dataclasses.replace(current, containers=(container_for(service_of(target, "init"), status="exited"),))
    assert actions(plan(target, current)) == [("create", "web")]
    failed_init = container_for(service_of(target, "init"), status="exited", exit_code=3)
    assert plan(target, dataclasses.replace(current, containers=(failed_init,))) == []


@pytest.mark.parametrize("restart, exit_code, restarted", [
    ("always", 0, True), ("unless-stopped", 137, True), ("on-failure", 1, True), ("on-failure", 0, False),
    ("no", 1, False), ("no", 0, False)])
def test_exited_containers_are_restarted_unless_their_policy_lets_them_finish(restart, exit_code, restarted):
    target = target_of({"web": {"restart": restart}})
    exited = container_for(service_of(target, "web"), status="exited", exit_code=exit_code)
    steps = plan(target, dataclasses.replace(converged_state(target), containers=(exited,)))
    assert actions(steps) == ([("start", "web")] if restarted else [])
    if restarted:
        assert steps[0].reason == f"container exited (code {exit_code})"


def test_a_dead_container_is_replaced():
    target = target_of({"web": {}})
    dead = container_for(service_of(target, "web"), status="dead")
    current = dataclasses.replace(converged_state(target), containers=(dead,))
    (remove,) = plan(target, current)
    assert (remove.action, remove.reason) == (Action.REMOVE, "container is dead")
    assert_converged(target, run_to_end(target, current)[0])


@pytest.mark.parametrize("status", ["restarting", "paused", "removing"])
def test_containers_the_engine_is_handling_are_left_alone(status):
    target = target_of({"web": {}})
    busy = container_for(service_of(target, "web"), status=status)
    current = dataclasses.replace(converged_state(target), containers=(busy,))
    assert plan(target, current) == []
    (entry,) = [entry for entry in explain(target, current) if entry["service_name"] == "web"]
    assert (entry["status"], entry["reason"]) == ("waiting", f"container is {status}; left to the engine")


def test_a_container_with_wrong_network_attachments_is_recreated():
    target = target_of({"web": {"networks": ["front", "back"]}})
    half_created = container_for(service_of(target, "web"), status="created", networks=frozenset({"back"}))
    current = dataclasses.replace(converged_state(target), containers=(half_created,))
    (remove,) = plan(target, current)
    assert (remove.action, remove.reason) == (Action.REMOVE, "network attachments differ from target")
    assert_converged(target, run_to_end(target, current)[0])


def test_a_removed_service_is_stopped_then_removed_and_its_network_dropped():
    before = target_of({"db": {"networks": ["back"]}, "web": {}})
    after = target_of({"web": {}})
    final, batches = run_to_end(after, converged_state(before))
    assert [actions(batch) for batch in batches] == [[("stop", "db")], [("remove", "db")], [("remove_network", None)]]
    assert batches[0][0].reason == "service removed from target"
    assert batches[2][0].resource == "back"
    assert_converged(after, final)


def test_a_removed_app_loses_containers_networks_and_volumes():
    before = target_of({"web": {"volumes": ["data:/data"]}}, **{"2": {"api": {"volumes": ["logs:/logs"]}}})
    after = target_of({"web": {"volumes": ["data:/data"]}})
    final, batches = run_to_end(after, converged_state(before))
    assert [sorted(actions(batch)) for batch in batches] == [
        [("stop", "api")], [("remove", "api")], [("remove_network", None), ("remove_volume", None)]]
    assert batches[0][0].reason == "app removed from target"
    assert final.volumes == {Resource("1", "data")}
    assert_converged(after, final)


def test_volumes_of_an_app_still_in_the_target_are_kept_when_unused():
    before = target_of({"web": {"volumes": ["data:/data"]}})
    after = target_of({"web": {}})
    final, _ = run_to_end(after, converged_state(before))
    assert final.volumes == {Resource("1", "data")}


def test_duplicates_are_reduced_to_the_up_to_date_running_one():
    target = target_of({"web": {}})
    web = service_of(target, "web")
    duplicates = (container_for(web, id="a", status="exited"), container_for(web, id="b"),
                  container_for(web, id="c", config_hash="stale"), container_for(web, id="d", status="dead"))
    current = dataclasses.replace(converged_state(target), containers=duplicates)
    batch = plan(target, current)
    assert sorted((step.action.value, step.container_id) for step in batch) == [
        ("remove", "a"), ("remove", "d"), ("stop", "c")]
    assert all(step.reason == "duplicate of container b" for step in batch)
    final, _ = run_to_end(target, current)
    assert [c.id for c in final.containers] == ["b"]


def test_shared_missing_image_is_pulled_once():
    target = target_of({"a": {"image": IMAGE_2}, "b": {"image": IMAGE_2}})
    batch = plan(target, EngineState(networks=frozenset({Resource("1", "default")})))
    assert actions(batch) == [("pull", "a")]


def test_failed_services_get_no_steps_until_cleared():
    target = target_of({"db": {}, "web": {"depends_on": ["db"]}})
    current = EngineState(images=frozenset({IMAGE_1}), networks=frozenset({Resource("1", "default")}))
    assert plan(target, current, frozenset({("1", "db")})) == []
    assert {(entry["service_name"], entry["status"]) for entry in explain(target, current, frozenset({("1", "db")}))} \
        == {("db", "failed"), ("web", "waiting")}


def test_a_failed_network_is_retried_on_behalf_of_the_next_service_then_given_up():
    target = target_of({"a": {"networks": ["n"]}, "b": {"networks": ["n"]}})
    current = EngineState(images=frozenset({IMAGE_1}))
    (first,) = plan(target, current)
    assert (first.action, first.key) == (Action.CREATE_NETWORK, ("1", "a"))
    (second,) = plan(target, current, frozenset({first.key}))
    assert second.key == ("1", "b")
    assert plan(target, current, frozenset({first.key, second.key})) == []


def test_failed_housekeeping_is_skipped():
    current = EngineState(networks=frozenset({Resource("9", "old")}), volumes=frozenset({Resource("9", "v")}))
    assert sorted(actions(plan(TargetState(), current))) == [("remove_network", None), ("remove_volume", None)]
    assert plan(TargetState(), current, frozenset({("9", None)})) == []


def test_plan_does_not_depend_on_the_order_the_engine_lists_containers():
    target = target_of({"db": {}, "web": {"image": IMAGE_2}})
    stale = [container_for(service_of(target, "db"), id=str(index), config_hash=f"h{index}") for index in range(5)]
    current = EngineState(containers=tuple(stale), images=frozenset({IMAGE_1}))
    reversed_current = dataclasses.replace(current, containers=tuple(reversed(stale)))
    assert plan(target, current) == plan(target, reversed_current)


# --- properties ------------------------------------------------------------------------------------------------

APP_IDS = ["1", "2", "3"]
SERVICE_NAMES = ["db", "api", "web", "job"]  # a service may depend only on those before it: no cycles
IMAGES = [IMAGE_1, IMAGE_2, "other:1"]
STATUSES = ["created", "running", "exited", "dead"]
HEALTH = ["", "starting", "healthy", "unhealthy"]


@st.composite
def targets(draw) -> TargetState:
    apps = {}
    for app_id in draw(st.lists(st.sampled_from(APP_IDS[:2]), unique=True, max_size=2)):
        names = draw(st.lists(st.sampled_from(SERVICE_NAMES), unique=True, max_size=4))
        names.sort(key=SERVICE_NAMES.index)
        running = {name: draw(st.booleans()) or draw(st.booleans()) for name in names}
        checked = {name for name in names if draw(st.booleans())}  # services that declare a health check
        services = {}
        for index, name in enumerate(names):
            candidates = [earlier for earlier in names[:index] if running[earlier] or not running[name]]
            depends_on = draw(st.lists(st.sampled_from(candidates), unique=True)) if candidates else []
            conditions = {dependency: draw(st.sampled_from(
                ["service_started", "service_healthy"] if dependency in checked else ["service_started"]))
                for dependency in depends_on}
            services[name] = {
                "image": draw(st.sampled_from(IMAGES)),
                "environment": {"V": draw(st.sampled_from(["1", "2"]))},
                "networks": draw(st.lists(st.sampled_from(["default", "front", "back"]), unique=True, max_size=2)),
                "volumes": [f"{volume}:/{volume}" for volume in draw(st.sets(st.sampled_from(["data", "logs"])))],
                "depends_on": {dependency: {"condition": condition} for dependency, condition in conditions.items()}
                if draw(st.booleans()) else depends_on,  # the long form, or the list form
                "running": running[name],
                **({"healthcheck": {"test": ["CMD", "true"], "interval": "1s"}} if name in checked else {}),
                "update_strategy": draw(st.sampled_from(["download-then-kill", "kill-then-download"])),
            }
        # A one-shot ("no") that nobody depends on: a failed dependency would rightly block its dependents forever.
        depended_on = {dependency for config in services.values() for dependency in config["depends_on"]}
        for name, config in services.items():
            policies = ["always", "on-failure"] + ([] if name in depended_on else ["no"])
            if "healthcheck" in config:  # one that may stay exited could never be waited on as healthy
                policies = ["always"]
            config["restart"] = draw(st.sampled_from(policies))
        apps[app_id] = services
    return parse_target_state({"apps": {app_id: {"services": [{"serviceName": name, "config": config}
                                                              for name, config in services.items()]}
                                        for app_id, services in apps.items()}})


@st.composite
def messy_states(draw, target: TargetState) -> EngineState:
    """Whatever a crash, a human or an older target may have left: stale, duplicate, foreign-app containers."""
    containers = []
    for app_id in APP_IDS:
        app = target.app(app_id)
        for name in SERVICE_NAMES:
            service = app.service(name) if app else None
            for copy in range(draw(st.integers(0, 2))):
                up_to_date = service is not None and draw(st.booleans())
                status = draw(st.sampled_from(STATUSES))
                containers.append(ContainerInfo(
                    id=f"old-{app_id}-{name}-{copy}",
                    name=f"{app_id}_{name}" if copy == 0 else f"{app_id}_{name}_{copy}",
                    app_id=app_id, service_name=name,
                    config_hash=config_hash(service) if up_to_date else draw(st.sampled_from(["stale", ""])),
                    image=draw(st.sampled_from(IMAGES)), status=status,
                    exit_code=draw(st.sampled_from([0, 1])) if status == "exited" else None,
                    health=draw(st.sampled_from(HEALTH)) if status == "running" else "",
                    networks=frozenset(draw(st.sets(st.sampled_from(["default", "front", "back"]), max_size=2))),
                ))
    resources = st.frozensets(st.builds(Resource, st.sampled_from(APP_IDS), st.sampled_from(
        ["default", "front", "back", "data", "logs"])), max_size=6)
    return EngineState(containers=tuple(draw(st.permutations(containers))),
                        images=draw(st.frozensets(st.sampled_from(IMAGES))),
                        networks=draw(resources), volumes=draw(resources))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_planning_from_any_state_converges_on_the_target(data):
    target = data.draw(targets())
    current = data.draw(messy_states(target))
    final, _ = run_to_end(target, current)
    assert_converged(target, final)
    assert plan(target, final) == []


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_plan_is_deterministic_and_independent_of_listing_order(data):
    target = data.draw(targets())
    current = data.draw(messy_states(target))
    shuffled = dataclasses.replace(current, containers=tuple(data.draw(st.permutations(current.containers))))
    assert plan(target, current) == plan(target, current) == plan(target, shuffled)
    assert explain(target, current) == explain(target, shuffled)


@settings(max_examples=60, deadline=None)
@given(targets())
def test_a_converged_state_plans_nothing(target):
    assert plan(target, converged_state(target, images=IMAGES)) == []


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_rounds_with_failing_steps_still_end(data):
    target = data.draw(targets())
    current = data.draw(messy_states(target))
    doomed = random.Random(data.draw(st.integers(0, 2**32)))
    after_failures, _ = run_to_end(target, current, fail=lambda step: doomed.random() < 0.3)
    final, _ = run_to_end(target, after_failures)  # next round, failures cleared
    assert_converged(target, final)


# -- safe destruction: volumes of an app that left the target outlive it by a grace period ---------------------

from actors.target.model import (  # noqa: E402
    OrphanedVolumes,
    orphan_clock,
    orphaned_volumes,
    orphans_from_json,
    orphans_to_json,
)

DAY = 86400.0


def without_app_2(purge=()):
    """An app 2 whose containers are gone and whose volume `logs` is left; the target no longer has it."""
    before = target_of({"web": {"volumes": ["data:/data"]}}, **{"2": {"api": {"volumes": ["logs:/logs"]}}})
    after = parse_target_state({"apps": {"1": {"services": [
        {"serviceName": "web", "config": {"image": IMAGE_1, "volumes": ["data:/data"]}}]}},
        **({"purge_volumes": list(purge)} if purge else {})})
    state = converged_state(before)
    state = dataclasses.replace(state, containers=tuple(c for c in state.containers if c.app_id == "1"),
                                networks=frozenset(n for n in state.networks if n.app_id == "1"))
    return after, state


def test_an_omitted_app_keeps_its_volumes_through_the_grace_period_then_loses_them():
    target, state = without_app_2()
    logs = Resource("2", "logs")
    assert orphaned_volumes(target, state) == {logs}
    kept = OrphanedVolumes(now=1000.0 + DAY - 1, grace=DAY, since={logs: 1000.0})
    assert [s for s in plan(target, state, orphans=kept) if s.action is Action.REMOVE_VOLUME] == []
    assert all(row["status"] == "converged" for row in explain(target, state, orphans=kept))  # kept is no work
    due = dataclasses.replace(kept, now=1000.0 + DAY)
    assert [(s.action, s.resource) for s in plan(target, state, orphans=due)] == [(Action.REMOVE_VOLUME, "logs")]


def test_a_volume_first_seen_orphaned_now_waits_the_whole_grace():
    target, state = without_app_2()
    assert plan(target, state, orphans=OrphanedVolumes(now=5.0, grace=DAY, since={})) == []


def test_purge_volumes_in_the_target_removes_them_at_once():
    target, state = without_app_2(purge=["2"])
    assert target.purge_volumes == ("2",)
    fresh = OrphanedVolumes(now=5.0, grace=DAY, since={})
    assert [(s.action, s.resource) for s in plan(target, state, orphans=fresh)] == [(Action.REMOVE_VOLUME, "logs")]


def test_the_orphan_clock_keeps_the_first_sighting_and_forgets_volumes_no_longer_orphaned():
    a, b, c = Resource("2", "a"), Resource("3", "b"), Resource("4", "c")
    clock = orphan_clock({a: 10.0, c: 20.0}, frozenset({a, b}), 99.0)
    assert clock == {a: 10.0, b: 99.0}  # c's app came back (or c is gone)
    assert orphans_from_json(orphans_to_json(clock)) == clock
    assert orphans_from_json("garbage") == {} and orphans_from_json({"no-slash": 1.0, "x/y": "z"}) == {}


def test_purge_volumes_is_validated_and_absent_from_the_canonical_form_when_empty():
    from messages.protocol.target_state import InvalidTargetState, to_json
    assert "purge_volumes" not in to_json(target_of({"web": {}}))
    document = {"apps": {}, "purge_volumes": ["2", "1"]}
    assert to_json(parse_target_state(document)) == {"apps": {}, "purge_volumes": ["1", "2"]}
    for bad in ("2", [2], ["../x"], ["a", "a"]):
        with pytest.raises(InvalidTargetState, match="purge_volumes"):
            parse_target_state({"apps": {}, "purge_volumes": bad})
