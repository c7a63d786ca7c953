"""Releases (pure): a target is applied as a release, committed once healthy, rolled back when it is not.

`Release` is the whole state, kept in the store (the reconciler sends it to persistence on every change,
so a restarted agent resumes it: level-triggered). Events are functions returning the next state:

- `on_target`: a stored target arrives. A target equal to the committed one needs nothing; the target
  last rolled back is not applied again until a *different* one arrives (a device never loops on a bad
  release); any other target starts an attempt.
- `on_observation`: the engine as read, judged by `readiness`. Every service ready, and all of them staying
  so for `settle_seconds`, commits the release; a failure (unhealthy, exited, crash-looping, or not ready
  within `timeout`) spends one of `max_attempts`, then rolls back to the committed release (or, on a first
  install with nothing committed, retries with backoff).
- `applied_target`: which document the reconciler converges on: the stored one, or the committed one while
  the stored one is the rolled-back target.

A service is *ready* when its container of the release's config runs and is healthy (or has no health
check); the settle window then covers "has run without restarting". Locks (`locked_apps`, `deferred`) are
the balena convention: an app's opted-in container holding `updates.lock` defers every stop of the app.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace

from actors.target.model import ContainerInfo, EngineState, Remove, ServiceKey, Step, Stop, containers_by_key
from messages.protocol import json as strict_json
from messages.protocol.json import JSONObject
from messages.protocol.target_state import (
    InvalidTargetState,
    Service,
    TargetState,
    config_hash,
    parse_target_state,
    to_json,
)
from messages.transport.backoff import backoff_delay

NONE, DONE, APPLYING, FAILED, ROLLED_BACK, LOCKED = "none", "done", "applying", "failed", "rolled_back", "locked"


@dataclass(frozen=True)
class Rules:
    """`[update]` of conf/agent.toml, and the first install's retry backoff."""
    settle_seconds: float = 10.0
    timeout: float = 300.0
    max_attempts: int = 1
    lock_timeout: float = 3600.0
    retry_base: float = 2.0
    retry_max: float = 300.0


@dataclass(frozen=True)
class Release:
    committed: str | None = None  # id (`target_id`) of the last committed target: the known good
    committed_etag: str | None = None
    committed_document: JSONObject | None = None  # its canonical document, applied again on a rollback
    applying: str | None = None  # id of the target being applied (None: nothing underway)
    applying_etag: str | None = None
    started_at: float = 0.0  # wall clock: when the current attempt began (outlives restarts)
    ready_since: float | None = None  # since when every service has been ready
    attempts: int = 0  # failed attempts of `applying`
    retry_at: float | None = None  # first install: the next attempt starts then
    blocked: str | None = None  # the rolled-back target: not applied again until a different one arrives
    failed_target: str | None = None  # the last target that failed, its etag, why, which service, when
    failed_etag: str | None = None
    reason: str = ""
    failed_service: tuple[str, str] | None = None
    failed_at: float | None = None

    @property
    def status(self) -> str:
        if self.applying is not None:
            return FAILED if self.retry_at is not None else APPLYING
        if self.blocked is not None:
            return ROLLED_BACK
        return DONE if self.committed is not None else NONE


@dataclass(frozen=True)
class Readiness:
    ready: bool
    failure: str = ""  # why the release failed ("" while it has not)
    service: tuple[str, str] | None = None  # the service that failed
    waiting: str = ""  # what is not ready yet


@dataclass(frozen=True)
class Outcome:
    """What an event asks of the reconciler besides applying `applied_target`."""
    event: str = ""  # "", committed, retry, rolled_back, failed, locked
    restart: tuple[ServiceKey, ...] = ()  # services to restart (a retry of the same target)


NOTHING = Outcome()


def target_id(target: TargetState) -> str:
    """The identity of a target: the hash of its canonical document (an etag may be absent or reused)."""
    return hashlib.sha256(strict_json.canonical_bytes(to_json(target))).hexdigest()[:16]


def on_target(release: Release, tid: str, etag: str | None, now: float) -> Release:
    if tid == release.applying or tid == release.blocked:
        return release  # underway, or rolled back: not again until a different target arrives
    if tid == release.committed:
        return replace(release, applying=None, applying_etag=None, retry_at=None, attempts=0, ready_since=None,
                       blocked=None)
    return replace(release, applying=tid, applying_etag=etag, started_at=now, attempts=0, ready_since=None,
                   retry_at=None, blocked=None)


def resumed(release: Release, now: float) -> Release:
    """The release as a (re)started agent takes it up: an attempt underway gets its whole window again, since
    the time the agent was down (a power cut) says nothing about the release; the settle window starts over."""
    if release.applying is None or release.retry_at is not None:
        return release
    return replace(release, started_at=now, ready_since=None)


def applied_target(release: Release, tid: str) -> str:
    """"committed" when the stored target `tid` is the rolled-back one (and a committed one exists), else
    "stored"."""
    return "committed" if tid == release.blocked and release.committed_document is not None else "stored"


def on_observation(release: Release, tid: str, document: JSONObject, readiness: Readiness, now: float,
                   rules: Rules, locked: bool = False) -> tuple[Release, Outcome]:
    """Judge the attempt at target `tid` (canonical `document`) from the engine as read at `now`."""
    if release.applying is None or release.applying != tid:
        return release, NOTHING
    if locked:  # the update cannot go on: its window waits with it
        return replace(release, started_at=now, ready_since=None), Outcome(LOCKED)
    if release.retry_at is not None:
        if now < release.retry_at:
            return release, NOTHING
        restart = () if release.failed_service is None else (release.failed_service,)
        return replace(release, retry_at=None, started_at=now, ready_since=None), Outcome("retry", restart)
    failure, service = readiness.failure, readiness.service
    if not failure and now - release.started_at > rules.timeout:
        failure = f"not ready within {rules.timeout:g} s: {readiness.waiting or 'not settled'}"
    if failure:
        return _failed(release, failure, service, now, rules)
    if not readiness.ready:
        return replace(release, ready_since=None), NOTHING
    if release.ready_since is None:
        return replace(release, ready_since=now), NOTHING
    if now - release.ready_since < rules.settle_seconds:
        return release, NOTHING
    return Release(committed=tid, committed_etag=release.applying_etag, committed_document=document), \
        Outcome("committed")


def _failed(release: Release, failure: str, service: tuple[str, str] | None, now: float,
            rules: Rules) -> tuple[Release, Outcome]:
    attempts = release.attempts + 1
    failed = replace(release, attempts=attempts, ready_since=None, failed_target=release.applying,
                     failed_etag=release.applying_etag, reason=failure, failed_service=service, failed_at=now)
    if attempts < rules.max_attempts:  # budget left: the same target again
        return replace(failed, started_at=now), Outcome("retry", () if service is None else (service,))
    if release.committed is not None:
        return replace(failed, applying=None, applying_etag=None, attempts=0, retry_at=None,
                       blocked=release.applying), Outcome(ROLLED_BACK)
    # First install: nothing to fall back to; try again after a backoff.
    return replace(failed, retry_at=now + backoff_delay(attempts, rules.retry_base, rules.retry_max)), Outcome(FAILED)


# -- readiness ------------------------------------------------------------------------------------------------

def readiness(target: TargetState, current: EngineState, converged: bool) -> Readiness:
    """Whether every service of `target` runs its release's container, ready; else the first failure, or
    what is not ready yet. `converged`: the planner has nothing left to do (no old container remains)."""
    by_key = containers_by_key(current.containers)
    waiting = []
    for app in target.apps:
        for service in app.services:
            key = (app.app_id, service.service_name)
            wanted = config_hash(service)
            mine = sorted((c for c in by_key.get(key, []) if c.config_hash == wanted),
                          key=lambda c: (c.status != "running", c.id))
            container = mine[0] if mine else None
            if container is not None and (problem := container_failure(service, container)):
                return Readiness(False, f"{'/'.join(key)}: {problem}", key)
            if container is None or not _ready(service, container):
                waiting.append("/".join(key))
    if waiting:
        return Readiness(False, waiting=f"waiting for {', '.join(waiting)}")
    if not converged:
        return Readiness(False, waiting="steps pending")
    return Readiness(True)


def container_failure(service: Service, container: ContainerInfo) -> str:
    """Why the service's container of this release has failed ("" if it has not)."""
    config = service.config
    if container.status == "restarting":
        return f"crash-looping (exit code {container.exit_code}, {container.restart_count} restarts)"
    if container.status == "dead":
        return "the container is dead"
    if container.health == "unhealthy":
        return f"unhealthy: {container.health_output or 'the health check failed'}"
    # With restart "always" or "unless-stopped" the engine restarts a crashing container (a crash loop shows
    # as restarting): exited there means stopped by hand or by the agent, which the planner starts again.
    if (container.status == "exited" and config.running and config.restart in ("no", "on-failure")
            and not _completed(service, container)):
        return f"exited with code {container.exit_code}"
    return ""


def _completed(service: Service, container: ContainerInfo) -> bool:
    return service.config.restart in ("no", "on-failure") and container.exit_code == 0


def _ready(service: Service, container: ContainerInfo) -> bool:
    if not service.config.running:
        return container.status not in ("running", "restarting")
    if container.status == "exited":
        return _completed(service, container)
    return container.status == "running" and container.health in ("", "healthy")


# -- after commit: crash loops are reported, not rolled back ---------------------------------------------------

def crash_loops(current: EngineState, since: Mapping[str, float], now: float) -> dict[str, float]:
    """Since when each crash-looping container (by id) has been seen so: known times kept, new ones `now`."""
    return {c.id: since.get(c.id, now) for c in current.containers if c.status == "restarting"}


def crash_loop_row(container: ContainerInfo, since: float) -> dict[str, str]:
    """What the report says of a crash-looping service (strings, like every report row)."""
    return {"crash_loop": "true", "restart_count": str(container.restart_count),
            "exit_code": str(container.exit_code), "crash_loop_since": f"{since:.3f}"}


# -- update locks ---------------------------------------------------------------------------------------------

def locked_apps(target: TargetState, current: EngineState, lock_label: str,
                lock_held: Callable[[str], bool]) -> frozenset[str]:
    """The apps holding their update lock: the lock file exists and one of the app's opted-in containers
    runs (a lock left by a container that no longer runs is ignored)."""
    opted = {(c.app_id) for c in current.containers if c.status == "running" and _opted_in(target, c, lock_label)}
    return frozenset(app_id for app_id in opted if lock_held(app_id))


def _opted_in(target: TargetState, container: ContainerInfo, lock_label: str) -> bool:
    app = target.app(container.app_id)
    service = None if app is None else app.service(container.service_name)
    return service is not None and dict(service.config.labels).get(lock_label) == "true"


def lock_clock(since: Mapping[str, float], locked: frozenset[str], now: float) -> dict[str, float]:
    """Since when each app has held its lock (an app that released it leaves the clock)."""
    return {app_id: since.get(app_id, now) for app_id in locked}


def deferred(target: TargetState, since: Mapping[str, float], now: float, rules: Rules) -> frozenset[str]:
    """The locked apps whose stops wait: all of them, unless the target says `override_lock` and the lock
    has been held for `lock_timeout`."""
    return frozenset(app_id for app_id, at in since.items()
                     if not (target.override_lock and now - at >= rules.lock_timeout))


def defer_for_locks(steps: Iterable[Step], apps: frozenset[str]) -> tuple[list[Step], list[Step]]:
    """(steps to run, steps deferred): stops and removals of a locked app's containers wait."""
    run: list[Step] = []
    held: list[Step] = []
    for step in steps:
        (held if isinstance(step, (Stop, Remove)) and step.app_id in apps else run).append(step)
    return run, held


# -- the store's form -----------------------------------------------------------------------------------------

def release_to_json(release: Release) -> JSONObject:
    value = asdict(release)
    value["failed_service"] = None if release.failed_service is None else list(release.failed_service)
    return value


def release_from_json(value: object) -> Release:
    """What release_to_json wrote; anything unreadable is the empty release (the next target is then a first
    install: applied, and retried, never rolled back to something unknown)."""
    if not isinstance(value, dict) or set(value) != {f.name for f in fields(Release)}:
        return Release()
    service = value["failed_service"]
    if service is not None and not (isinstance(service, list) and len(service) == 2
                                    and all(isinstance(part, str) for part in service)):
        return Release()
    release = Release(**{**value, "failed_service": None if service is None else (service[0], service[1])})
    for name, kinds in _STORED_TYPES.items():
        if not isinstance(getattr(release, name), kinds) or isinstance(getattr(release, name), bool):
            return Release()
    if release.committed_document is not None:
        try:  # it was canonical when committed: one this agent cannot read is no known good
            parse_target_state(release.committed_document)
        except InvalidTargetState:
            return Release()
    return release


_NONE = type(None)
_STORED_TYPES: dict[str, tuple[type, ...]] = {
    **{name: (str, _NONE) for name in ("committed", "committed_etag", "applying", "applying_etag", "blocked",
                                       "failed_target", "failed_etag")},
    "committed_document": (dict, _NONE), "started_at": (int, float), "ready_since": (int, float, _NONE),
    "attempts": (int,), "retry_at": (int, float, _NONE), "reason": (str,), "failed_at": (int, float, _NONE)}


# -- the report -----------------------------------------------------------------------------------------------

def release_section(release: Release, locked: bool) -> dict[str, str]:
    """The report's `release`: its status, the release that runs (committed), the one underway, the target
    that failed and why. Only non-empty strings: in a report patch null deletes."""
    section = {"status": LOCKED if locked and release.applying is not None else release.status,
               "running": release.committed_etag or release.committed or "",
               "applying": (release.applying_etag or release.applying or "") if release.applying else "",
               "failed_target": release.failed_etag or release.failed_target or "",
               "reason": release.reason if release.failed_target else "",
               "failed_service": "/".join(release.failed_service or ())}
    return {key: value for key, value in section.items() if value}


def app_status(release: Release, computed: str, locked: bool) -> str:
    """An app's update_status: the release's when it says more than the engine's view (`computed`)."""
    if locked and release.applying is not None:
        return LOCKED
    if release.status in (ROLLED_BACK, FAILED):
        return release.status
    if release.status == APPLYING and computed == DONE:
        return APPLYING  # converged, not committed yet: settling
    return computed
