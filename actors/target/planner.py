"""Reconciliation planner (pure): target state + current state -> the next batch of steps.

Level-triggered: `plan` returns only steps that can all run in parallel *now*; the executor runs the batch,
re-reads the engine and plans again until `plan` returns []. Each service advances by at most one step per
batch, so the order pull -> stop -> remove -> create -> start follows from re-planning, never from memory.
The current state holds only this agent's containers, networks and volumes (the engine filters by owner
label), so foreign containers can never appear in a plan.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator, Mapping, TypedDict

from actors.target.model import (
    ACTIVE_STATUSES,
    Action,
    ContainerInfo,
    Create,
    CreateNetwork,
    CreateVolume,
    EngineState,
    Key,
    OrphanedVolumes,
    Pull,
    Remove,
    RemoveNetwork,
    RemoveVolume,
    Resource,
    Start,
    Step,
    Stop,
    Verdict,
    containers_by_key,
)
from messages.protocol.target_state import (
    DOWNLOAD_THEN_KILL,
    HAND_OVER,
    SERVICE_HEALTHY,
    App,
    Service,
    TargetState,
    config_field_hashes,
    config_hash,
)

REMOVE_AT_ONCE = OrphanedVolumes()  # no grace: for callers that keep no clock


def plan(target: TargetState, current: EngineState,
         failed_services: frozenset[Key] = frozenset(), orphans: OrphanedVolumes = REMOVE_AT_ONCE) -> list[Step]:
    """The next batch of independent steps; [] when converged (or nothing more can be done this round).

    `failed_services` holds the `Step.key` of steps that failed this round: their service (or, with None,
    their app's housekeeping) gets no step until the caller clears it, so a round always ends. `orphans`
    says which volumes of apps that left the target are due for removal (a volume kept has no verdict).
    """
    steps = [step for verdict in _verdicts(target, current, failed_services, orphans) for step in verdict.steps]
    return _without_duplicate_pulls(steps)


class VerdictRow(TypedDict):
    """A verdict as `explain` reports it: plain values, for logs, reports and the plan CLI."""
    app_id: str
    service_name: str | None  # None: the app's housekeeping
    status: str  # converged | pending | waiting | failed | removing
    reason: str
    steps: list[str]  # the actions of its steps


def explain(target: TargetState, current: EngineState,
            failed_services: frozenset[Key] = frozenset(), orphans: OrphanedVolumes = REMOVE_AT_ONCE
            ) -> list[VerdictRow]:
    """Per service (and per app housekeeping): status and reason, for reporting why a device is not converged."""
    return [{"app_id": verdict.app_id, "service_name": verdict.service_name, "status": verdict.status,
             "reason": verdict.reason, "steps": [step.action.value for step in verdict.steps]}
            for verdict in _verdicts(target, current, failed_services, orphans)]


def _verdicts(target: TargetState, current: EngineState,
              failed: frozenset[Key], orphans: OrphanedVolumes) -> Iterator[Verdict]:
    by_service = containers_by_key(sorted(current.containers, key=lambda c: c.id))
    for app in target.apps:
        keepers = {service.service_name: _keeper(by_service.get((app.app_id, service.service_name), []), service)
                   for service in app.services}
        resource_steps = _resource_steps(app, current, failed)
        for service in app.services:
            key = (app.app_id, service.service_name)
            if key in failed:
                yield Verdict(*key, "failed", "a step failed this round")
            else:
                yield _service_verdict(app, service, by_service.get(key, []), keepers, current,
                                       resource_steps.get(service.service_name, ()))
    for (app_id, service_name), containers in sorted(by_service.items()):
        target_app = target.app(app_id)
        if target_app is not None and target_app.service(service_name) is not None:
            continue
        if (app_id, service_name) in failed:
            yield Verdict(app_id, service_name, "failed", "a step failed this round")
        else:
            reason = "app removed from target" if target_app is None else "service removed from target"
            yield Verdict(app_id, service_name, "removing", reason,
                          tuple(_stop_or_remove(container, reason) for container in containers))
    yield from _housekeeping(target, current, failed, orphans)


def _service_verdict(app: App, service: Service, containers: list[ContainerInfo],
                     keepers: Mapping[str, ContainerInfo | None], current: EngineState,
                     resource_steps: tuple[Step, ...]) -> Verdict:
    keeper = keepers[service.service_name]
    step, waiting_for = _next_step(app, service, keeper, keepers, current)
    handing_over = keeper is not None and _handing_over(service, keeper)
    extras = () if keeper is None else tuple(  # no keeper: there are no containers
        _stop_or_remove(container, f"duplicate of container {keeper.id[:12]}")
        for container in containers if container is not keeper
        and not (handing_over and container.status in ACTIVE_STATUSES))
    if keeper is not None and handing_over and not step and not waiting_for:
        waiting_for = f"hand-over: the old container runs until {keeper.id[:12]} is ready"
    steps = resource_steps + extras + ((step,) if step else ())
    if steps:
        return Verdict(app.app_id, service.service_name, "pending", "; ".join(s.reason for s in steps), steps)
    if waiting_for:
        return Verdict(app.app_id, service.service_name, "waiting", waiting_for)
    return Verdict(app.app_id, service.service_name, "converged", "matches target")


def _next_step(app: App, service: Service, keeper: ContainerInfo | None,
               keepers: Mapping[str, ContainerInfo | None], current: EngineState) -> tuple[Step | None, str]:
    """The one step that moves this service's kept container toward the target, or why there is none."""
    config = service.config
    image_present = config.image in current.images

    def on(kind: type[Start | Stop | Remove], reason: str, container: ContainerInfo) -> Step:
        return kind(app.app_id, service.service_name, reason, container.id, service)

    def pull(reason: str) -> Step:
        return Pull(app.app_id, service.service_name, reason, config.image, service)

    def missing_dependencies() -> str:
        return _waiting_for_dependencies(service, keepers, app)

    if keeper is not None and (outdated := _outdated_reason(keeper, service)):
        if keeper.status not in ACTIVE_STATUSES:
            return on(Remove, outdated, keeper), ""
        if config.update_strategy == HAND_OVER and keeper.config_hash != config_hash(service):
            if not image_present:
                return pull(f"{outdated}: image {config.image} missing, pulled before the hand-over"), ""
            return Create(app.app_id, service.service_name, f"{outdated}: the new container starts beside the old",
                          service), ""
        if config.update_strategy == DOWNLOAD_THEN_KILL and not image_present:
            return pull(f"{outdated}: image {config.image} missing, pulled before stopping"), ""
        return on(Stop, outdated, keeper), ""
    if keeper is None:
        if not image_present:
            return pull(f"image {config.image} missing"), ""
        absent = _missing_resources(app, service, current)
        if absent:
            return None, f"waiting for {absent}"
        if config.running and (waiting := missing_dependencies()):
            return None, waiting
        return Create(app.app_id, service.service_name, "no container", service), ""
    if keeper.status == "dead":
        return on(Remove, "container is dead", keeper), ""
    if not config.running:
        if keeper.status in ACTIVE_STATUSES:
            return on(Stop, "service is set to running: false", keeper), ""
        return None, ""
    if keeper.status in ("created", "exited") and not _finished(keeper, service):
        if waiting := missing_dependencies():
            return None, waiting
        reason = "container not started" if keeper.status == "created" else "container exited" + (
            "" if keeper.exit_code is None else f" (code {keeper.exit_code})")
        return on(Start, reason, keeper), ""
    if keeper.status in ("restarting", "paused", "removing"):
        return None, f"container is {keeper.status}; left to the engine"
    return None, ""


def _keeper(containers: list[ContainerInfo], service: Service) -> ContainerInfo | None:
    """The container to keep when there are several: up to date first, then running, then alive, then id."""
    wanted = config_hash(service)
    return min(containers, default=None, key=lambda c: (
        c.config_hash != wanted, c.status not in ACTIVE_STATUSES, c.status == "dead", c.id))


def _outdated_reason(container: ContainerInfo, service: Service) -> str:
    """Why the container no longer matches the target ("" if it does). The decision uses only the hash
    label and our own network attachments, never fields the engine fills in."""
    if container.config_hash != config_hash(service):
        created_with = dict(container.field_hashes)
        wanted = config_field_hashes(service)
        changed = [field for field, digest in wanted.items()
                   if field != "image" and created_with and created_with.get(field) != digest]
        changed += [field for field in created_with if field not in wanted]  # an option no longer set
        parts = [f"image changed ({container.image} -> {service.config.image})"
                 ] if container.image != service.config.image else []
        parts += [f"{', '.join(changed)} changed"] if changed else []
        return "; ".join(parts) or "configuration changed"
    if container.networks != frozenset(service.config.networks):
        return "network attachments differ from target"
    return ""


def _handing_over(service: Service, keeper: ContainerInfo) -> bool:
    """A hand-over whose new container is not ready yet (running, and healthy if it has a health check):
    the old one keeps running meanwhile. One that never gets ready goes when its release is rolled back."""
    ready = keeper.status == "running" and keeper.health in ("", "healthy")
    return service.config.update_strategy == HAND_OVER and not ready and keeper.config_hash == config_hash(service)


def _finished(container: ContainerInfo, service: Service) -> bool:
    """A one-shot container that completed: its restart policy says it stays exited."""
    restart, _, retries = service.config.restart.partition(":")
    # With "on-failure:N" the engine gave up after N retries: starting it again would defeat the limit.
    return container.status == "exited" and (
        restart == "no" or (restart == "on-failure" and (container.exit_code == 0 or bool(retries))))


def _serves_dependents(container: ContainerInfo | None, app: App) -> bool:
    """A dependency is ready when its up-to-date container runs, or has completed successfully as a one-shot."""
    service = None if container is None else app.service(container.service_name)
    if container is None or service is None:  # a keeper is a service's of this app: None only without one
        return False
    completed = _finished(container, service) and container.exit_code == 0
    return not _outdated_reason(container, service) and (container.status == "running" or completed)


_TO_BE_HEALTHY = " to be healthy"


def waits_for_health(rows: Iterable[VerdictRow]) -> bool:
    """A service waits for a dependency's health check to pass: only the engine's health status will change
    that, so the caller reads the engine again soon (no event tells it)."""
    return any(row["status"] == "waiting" and row["reason"].endswith(_TO_BE_HEALTHY) for row in rows)


def _waiting_for_dependencies(service: Service, keepers: Mapping[str, ContainerInfo | None], app: App) -> str:
    """What a service waits for before its container is created or started ("" for nothing): dependencies
    that do not serve dependents yet, and those waited on as service_healthy that are not running healthy."""
    not_ready, not_healthy = [], []
    for name, condition in service.config.depends_on:
        keeper = keepers[name]
        if condition == SERVICE_HEALTHY:
            if not (_serves_dependents(keeper, app) and keeper is not None and keeper.status == "running"
                    and keeper.health == "healthy"):
                not_healthy.append(name)
        elif not _serves_dependents(keeper, app):
            not_ready.append(name)
    parts = ([f"dependencies: {', '.join(not_ready)}"] if not_ready else []) + (
        [f"{', '.join(not_healthy)}{_TO_BE_HEALTHY}"] if not_healthy else [])
    return f"waiting for {' and '.join(parts)}" if parts else ""


def _missing_resources(app: App, service: Service, current: EngineState) -> str:
    networks = [f"network {name}" for name in service.config.networks
                if Resource(app.app_id, name) not in current.networks]
    volumes = [f"volume {mount.volume}" for mount in service.config.volumes
               if not mount.is_bind and Resource(app.app_id, mount.volume) not in current.volumes]
    return ", ".join(sorted(set(networks)) + sorted(set(volumes)))


def _resource_steps(app: App, current: EngineState,
                    failed: frozenset[Key]) -> dict[str, tuple[Step, ...]]:
    """Missing networks and volumes, each attributed to the first service needing it that has not failed."""
    users: dict[tuple[Action, str], list[str]] = defaultdict(list)
    for service in app.services:
        for network in service.config.networks:
            users[Action.CREATE_NETWORK, network].append(service.service_name)
        for volume in {mount.volume for mount in service.config.volumes if not mount.is_bind}:
            users[Action.CREATE_VOLUME, volume].append(service.service_name)
    steps: dict[str, list[Step]] = defaultdict(list)
    for (action, name), services in sorted(users.items()):
        existing = current.networks if action is Action.CREATE_NETWORK else current.volumes
        owner = next((s for s in services if (app.app_id, s) not in failed), None)
        if Resource(app.app_id, name) not in existing and owner is not None:
            kind, make = ("network", CreateNetwork) if action is Action.CREATE_NETWORK else ("volume", CreateVolume)
            steps[owner].append(make(app.app_id, owner, f"{kind} {name} missing (needed by {', '.join(services)})",
                                     name))
    return {service: tuple(service_steps) for service, service_steps in steps.items()}


def _housekeeping(target: TargetState, current: EngineState,
                  failed: frozenset[Key], orphans: OrphanedVolumes) -> Iterator[Verdict]:
    """Orphaned networks go once no container is attached; volumes hold data, so they go only with their
    app, once none of its containers is left and their grace period is over (`OrphanedVolumes`)."""
    needed_networks = {Resource(app.app_id, network) for app in target.apps
                       for service in app.services for network in service.config.networks}
    attached = {Resource(c.app_id, network) for c in current.containers for network in c.networks}
    apps_with_containers = {container.app_id for container in current.containers}
    steps: dict[str, list[Step]] = defaultdict(list)
    for network in sorted(current.networks - needed_networks - attached):
        steps[network.app_id].append(RemoveNetwork(network.app_id, None, f"network {network.name} no longer used",
                                                   network.name))
    for volume in sorted(current.volumes):
        if (target.app(volume.app_id) is None and volume.app_id not in apps_with_containers
                and orphans.due(target, volume)):
            steps[volume.app_id].append(RemoveVolume(volume.app_id, None,
                                                     f"volume {volume.name}: app removed from target", volume.name))
    for app_id, app_steps in sorted(steps.items()):
        if (app_id, None) in failed:
            yield Verdict(app_id, None, "failed", "a housekeeping step failed this round")
        else:
            yield Verdict(app_id, None, "removing", "; ".join(s.reason for s in app_steps), tuple(app_steps))


def _stop_or_remove(container: ContainerInfo, reason: str) -> Step:
    kind = Stop if container.status in ACTIVE_STATUSES else Remove
    return kind(container.app_id, container.service_name, reason, container.id)


def _without_duplicate_pulls(steps: Iterable[Step]) -> list[Step]:
    """Services sharing a missing image pull it once per batch."""
    pulled: set[str] = set()
    kept = []
    for step in steps:
        if isinstance(step, Pull):
            if step.image in pulled:
                continue
            pulled.add(step.image)
        kept.append(step)
    return kept
