"""The reconciler: converges the Docker engine on the stored target state, level-triggered.

It reads the engine, plans (the pure planner), runs the planned steps in short-lived engine workers
(`actors.engine_worker`) and, whenever a step ends, reads the engine again and plans again, until the
plan is empty. It never blocks: engine calls run in the workers, so a long pull delays neither new
targets nor anything else; a newer target is planned at once and a pull it no longer needs is cancelled.

- A service with a step running, or with one that ended after the read being planned from started, gets
  no step; nor does an image or network that such a step is about: no step is repeated on an outdated
  view of the engine, and the other services go on meanwhile.
- A failed step is retried with per-service exponential backoff; after `max_attempts` failures the
  service is marked failed (recorded for status, shown in the report) and still retried at the backoff
  cap, while the rest of the device converges.
- The engine out of reach is a fault for the supervisor: the reconciler crashes and is restarted with
  backoff; every (re)start begins with a read, so the device converges once the engine is back.
- A drift check re-reads the engine on a timer: a container removed or stopped by hand comes back.
"""
from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import messages
from actors.runtime.base import FleetletActor
from actors.runtime.settings import SettingsError, load_settings, require_positive
from actors.target.engine.adapter import (
    OWNER_PATTERN,
    EngineError,
    EngineUnavailable,
    describe,
)
from actors.target.engine.worker import state_from_wire, step_to_wire
from actors.target.planner import (
    ACTIVE_STATUSES,
    Action,
    ContainerInfo,
    CurrentState,
    Step,
    explain,
    plan,
)
from messages.bus.engine import (
    EngineJob,
    EngineJobDone,
    EngineJobStarted,
    ReconcileNow,
    ReconcilePass,
)
from messages.bus.outbox import ClearError, RecordError
from messages.bus.target import CurrentState as CurrentStateReport
from messages.bus.target import RestartServices, TargetStateStored
from messages.protocol.target_state import (
    InvalidTargetState,
    TargetState,
    parse_target_state,
)
from messages.transport.backoff import backoff_delay
from store import Store

Key = tuple[str, "str | None"]  # (app id, service name); None: the app's housekeeping
RESTART_REASON = "restart requested"


@dataclass(frozen=True)
class ReconcilerSettings:
    max_parallel: int = 4  # engine steps running at once
    drift_interval: float = 30.0  # seconds between drift checks (re-read and converge)
    retry_base: float = 2.0  # a failed service is retried after this, doubling up to retry_max
    retry_max: float = 300.0
    max_attempts: int = 3  # failures after which a service is marked failed (it is still retried)
    engine_timeout: float = 30.0  # seconds for one engine API call
    stop_timeout: int = 10  # seconds a container gets to stop before the engine kills it

    def __post_init__(self):
        require_positive(self, "max_parallel", "drift_interval", "retry_base", "retry_max", "max_attempts",
                         "engine_timeout")
        if self.stop_timeout < 0:
            raise SettingsError(f"stop_timeout must be >= 0, got {self.stop_timeout!r}")


@dataclass(frozen=True)
class Failure:
    count: int
    error: str
    retry_at: float  # monotonic seconds


# -- pure core -------------------------------------------------------------------------------------------


def retry_delay(settings: ReconcilerSettings, count: int) -> float:
    """Seconds before retrying a service after `count` failures: the backoff's ceiling, no jitter, since the
    engine is local and there is no herd to spread."""
    return backoff_delay(count, settings.retry_base, settings.retry_max)


def next_steps(target: TargetState, current: CurrentState, underway: Iterable[Step], backing_off: frozenset[Key],
               restarts: Mapping[Key, str], slots: int) -> list[Step]:
    """The steps to start now: restarts first, then the plan, at most `slots` of them, for services not
    backing off and with no step `underway` (running, or ended after `current` was read), and without what
    such a step is already doing (a pull, a network)."""
    underway = list(underway)
    excluded = backing_off | frozenset(step.key for step in underway)
    doing = {step_identity(step) for step in underway}
    steps = restart_steps(current, {key: phase for key, phase in restarts.items() if key not in excluded})
    steps += plan(target, current, excluded | frozenset(restarts))
    return [step for step in steps if step_identity(step) not in doing][:max(slots, 0)]


def step_identity(step: Step) -> tuple:
    """Equal for steps that do the same to the engine, whichever service they were planned for."""
    if step.action is Action.PULL:
        return step.action, step.image
    if step.resource is not None:
        return step.action, step.app_id, step.resource
    return step.action, step.app_id, step.service_name, step.container_id


def restart_steps(current: CurrentState, restarts: Mapping[Key, str]) -> list[Step]:
    """A restart is a stop of the service's running containers ("stop" phase), then a start ("start")."""
    by_key = _containers_by_key(current)
    steps = []
    for (app_id, service_name), phase in sorted(restarts.items()):
        containers = by_key.get((app_id, service_name), [])
        active = [container for container in containers if container.status in ACTIVE_STATUSES]
        wanted, action = (active, Action.STOP) if phase == "stop" and active else (
            [c for c in containers if c.status in ("created", "exited")][:1], Action.START)
        steps += [Step(action, app_id, service_name, RESTART_REASON, container_id=container.id)
                  for container in wanted]
    return steps


def finished_restarts(current: CurrentState, restarts: Mapping[Key, str]) -> set[Key]:
    """Restarts with nothing left to do: no container (the plan creates it), or it runs again."""
    return {key for key, phase in restarts.items() if not restart_steps(current, {key: phase})}


def obsolete_pulls(target: TargetState, pulls: Mapping[int, str]) -> list[int]:
    """Jobs (id -> image) pulling an image that no service of the new target uses any more."""
    needed = {service.config.image for app in target.apps for service in app.services}
    return [job_id for job_id, image in pulls.items() if image not in needed]


def report_state(target: TargetState, current: CurrentState, verdicts: list[dict], failed: Mapping[Key, str],
                 in_flight: Iterable[Step]) -> dict:
    """The device's current state in report form: per app its update status, per service its container
    id, image, status and (when marked failed) the reason. No nulls: in a report patch null deletes."""
    in_flight = list(in_flight)
    by_key = _containers_by_key(current)
    pulling = {step.key for step in in_flight if step.action is Action.PULL}
    keys = {(app.app_id, service.service_name) for app in target.apps for service in app.services} | set(by_key)
    apps: dict[str, dict] = {}
    for app_id, service_name in sorted(keys):
        containers = by_key.get((app_id, service_name))
        if containers:
            shown = min(containers, key=lambda c: (c.status not in ACTIVE_STATUSES, c.id))
            row = {"containerId": shown.id, "image": shown.image, "status": shown.status}
        else:
            service = target.app(app_id).service(service_name)
            row = {"image": service.config.image,
                   "status": "downloading" if (app_id, service_name) in pulling else "absent"}
        if (app_id, service_name) in failed:
            row["reason"] = failed[app_id, service_name]
        apps.setdefault(app_id, {"services": {}})["services"][service_name] = row
    unsettled = {row["app_id"] for row in verdicts if row["status"] != "converged"}
    for app_id, app in apps.items():
        if any(key[0] == app_id for key in failed):
            app["update_status"] = "failed"
        elif any(step.app_id == app_id and step.action is Action.PULL for step in in_flight):
            app["update_status"] = "downloading"
        elif app_id in unsettled or any(step.app_id == app_id for step in in_flight):
            app["update_status"] = "applying"
        else:
            app["update_status"] = "done"
    return {"apps": apps}


def key_text(key: Key) -> str:
    return "/".join(part for part in key if part)


def _containers_by_key(current: CurrentState) -> dict[Key, list[ContainerInfo]]:
    grouped: dict[Key, list[ContainerInfo]] = defaultdict(list)
    for container in current.containers:
        grouped[container.app_id, container.service_name].append(container)
    return grouped


# -- actor -----------------------------------------------------------------------------------------------


@dataclass
class Job:
    step: Step | None  # None: a read
    address: object
    read_number: int = 0  # reads: their sequence number
    pid: int | None = None
    cancelled: bool = False


@dataclass
class Pass:
    """From a trigger (new target, drift check, retry...) until the reconciler is idle again."""
    trigger: str
    started_at: float = field(default_factory=time.time)
    steps: int = 0


class Reconciler(FleetletActor):
    store: Store | None = None
    jobs: dict = {}

    def started(self) -> None:
        self.options = load_settings(ReconcilerSettings, self.settings, self.name)
        self.owner = self.config["device"]["uuid"]
        if not OWNER_PATTERN.fullmatch(self.owner):
            raise SettingsError(f"device.uuid {self.owner!r} cannot label containers: it must match "
                                f"{OWNER_PATTERN.pattern}")
        self.store = Store.open(self.config["store"]["path"], readonly=True)
        self.target: TargetState | None = None
        self.etag: str | None = None
        self.current: CurrentState | None = None
        self.jobs: dict[int, Job] = {}
        self.next_job = 0
        self.reads_launched = 0
        self.read_wanted = False
        self.ended: list[tuple[int, Step]] = []  # (reads launched then, step): reads up to that may not show it
        self.failures: dict[Key, Failure] = {}
        self.restarts: dict[Key, str] = {}
        self.marked_failed: set[Key] = set()
        self.retry_timer_at: float | None = None
        self.engine_error_cleared = False
        self.last_report: dict | None = None
        self.last_report_at = 0.0
        self.pass_: Pass | None = None
        self._load_target()
        self.after(self.options.drift_interval, ("drift",))
        self._trigger("start")

    def stopping(self) -> None:
        self._kill_workers()
        if self.store is not None:
            self.store.close()

    def crash(self, exc: BaseException) -> None:
        # An exiting actor waits for its children: end the workers so the restart is not delayed by them.
        self._kill_workers()
        super().crash(exc)

    # -- triggers -----------------------------------------------------------------------------------

    def on_TargetStateStored(self, msg: TargetStateStored) -> None:
        if self._load_target():
            pulls = {job_id: job.step.image for job_id, job in self.jobs.items()
                     if job.step is not None and job.step.action is Action.PULL}
            for job_id in obsolete_pulls(self.target, pulls):
                self._cancel(job_id)
            for key in list(self.failures):
                self._forget_failure(key)
            self.restarts.clear()
        self._trigger("new target")

    def on_ReconcileNow(self, msg: ReconcileNow) -> None:
        self._trigger(msg.reason)

    def on_RestartServices(self, msg: RestartServices) -> None:
        self.log.info("restarting %s of app %s: %s", ", ".join(msg.services), msg.app_id, msg.reason)
        app = None if self.target is None else self.target.app(msg.app_id)
        for service_name in msg.services:
            if app is None or app.service(service_name) is None:
                self.log.warning("cannot restart %s/%s: not in the target state", msg.app_id, service_name)
                continue
            self.restarts[msg.app_id, service_name] = "stop"
            self._forget_failure((msg.app_id, service_name))
        self._trigger("restart services")

    def on_timer(self, payload) -> None:
        if payload == ("drift",):
            self.after(self.options.drift_interval, ("drift",))
            self._trigger("drift check")
        elif payload == ("retry",):
            self.retry_timer_at = None
            self._trigger("retry")

    def _trigger(self, reason: str) -> None:
        if self.pass_ is None:
            self.pass_ = Pass(reason)
        self._request_read()

    def _load_target(self) -> bool:
        """Take the stored target; True if it differs from the one in force."""
        stored = self.store.load_target()
        if stored is None:
            return False
        try:
            target = parse_target_state(stored.document)
        except InvalidTargetState as exc:  # persistence stores only validated documents: a bug, keep the old one
            self.log.error("the stored target state %s is invalid: %s", stored.etag, exc.reason)
            self.publish(RecordError("reconciler", "target", f"stored target is invalid: {exc.reason}", time.time()))
            return False
        changed = target != self.target
        self.target, self.etag = target, stored.etag
        return changed

    # -- jobs ---------------------------------------------------------------------------------------

    def _launch(self, step: Step | None) -> None:
        self.next_job += 1
        address = self.createActor("actors.target.engine.worker.EngineWorker")
        job = Job(step, address)
        if step is None:
            self.reads_launched += 1
            job.read_number = self.reads_launched
        self.jobs[self.next_job] = job
        options = self.options
        self.send(address, messages.encode(EngineJob(self.next_job, self.owner, options.engine_timeout,
                                                     options.stop_timeout,
                                                     None if step is None else step_to_wire(step))))

    def _request_read(self) -> None:
        if any(job.step is None for job in self.jobs.values()):
            self.read_wanted = True  # one read at a time; the next starts when it is back
        else:
            self._launch(None)

    def _cancel(self, job_id: int) -> None:
        job = self.jobs[job_id]
        job.cancelled = True
        self.log.info("cancelling %s: the new target does not need it", describe(job.step))
        if job.pid is not None:
            _kill(job.pid)

    def _kill_workers(self) -> None:
        for job in self.jobs.values():
            if job.pid is not None:
                _kill(job.pid)

    def on_EngineJobStarted(self, msg: EngineJobStarted) -> None:
        job = self.jobs.get(msg.job_id)
        if job is not None:
            job.pid = msg.pid
            if job.cancelled:
                _kill(msg.pid)

    def on_EngineJobDone(self, msg: EngineJobDone) -> None:
        job = self.jobs.pop(msg.job_id, None)
        if job is None:
            return
        if msg.unavailable:
            self.publish(RecordError("reconciler", "engine", msg.error, time.time()))
            raise EngineUnavailable(job.step, msg.error)
        if job.step is None:
            if msg.error:
                raise EngineError(None, f"cannot read the engine: {msg.error}")
            self._read_done(job, state_from_wire(msg.state))
        else:
            self._step_done(job.step, msg.error)

    def on_child_exited(self, address) -> None:
        job_id = next((job_id for job_id, job in self.jobs.items() if job.address == address), None)
        if job_id is None:
            return  # it answered before exiting
        job = self.jobs.pop(job_id)
        if job.step is None:
            raise EngineError(None, "the engine worker reading the state died")
        self._step_done(job.step, None if job.cancelled else "the engine worker died without an answer")

    def _step_done(self, step: Step, error: str | None) -> None:
        self.ended.append((self.reads_launched, step))
        if self.pass_ is not None:
            self.pass_.steps += 1
        if error:
            self._failed(step.key, error)
        elif step.key in self.restarts and step.reason == RESTART_REASON:
            self.restarts[step.key] = "start"
        self._request_read()

    def _failed(self, key: Key, error: str) -> None:
        count = self.failures[key].count + 1 if key in self.failures else 1
        self.failures[key] = Failure(count, error, time.monotonic() + retry_delay(self.options, count))
        self.log.warning("%s failed (%d): %s", key_text(key), count, error)
        if count >= self.options.max_attempts:
            self.marked_failed.add(key)
            self.publish(RecordError("reconciler", key_text(key), f"{error} (failed {count} times, still retrying)",
                                     time.time()))

    def _forget_failure(self, key: Key) -> None:
        self.failures.pop(key, None)
        if key in self.marked_failed:
            self.marked_failed.discard(key)
            self.publish(ClearError("reconciler", key_text(key)))

    # -- the loop -----------------------------------------------------------------------------------

    def _read_done(self, job: Job, current: CurrentState) -> None:
        self.current = current
        if not self.engine_error_cleared:
            self.publish(ClearError("reconciler", "engine"))
            self.engine_error_cleared = True
        if self.read_wanted:
            self.read_wanted = False
            self._launch(None)
        self.ended = [(number, step) for number, step in self.ended if number >= job.read_number]
        self._act([step for _, step in self.ended])

    def _act(self, unseen: list[Step]) -> None:
        """Start what the plan says now; `unseen`: steps that ended after the current state was read."""
        now = time.monotonic()
        running = [job.step for job in self.jobs.values() if job.step is not None]
        backing_off = frozenset(key for key, failure in self.failures.items() if failure.retry_at > now)
        excluded = frozenset(step.key for step in running + unseen) | backing_off
        target = self.target if self.target is not None else TargetState()
        for key in finished_restarts(self.current, self.restarts) - excluded:
            del self.restarts[key]
        steps = [] if self.target is None else next_steps(
            target, self.current, running + unseen, backing_off, self.restarts,
            self.options.max_parallel - len(running))
        for step in steps:
            self.log.info("%s %s: %s", step.action.value, key_text(step.key), step.reason)
            self._launch(step)
        verdicts = [] if self.target is None else explain(target, self.current, excluded)
        for row in verdicts:
            if row["status"] == "converged":
                self._forget_failure((row["app_id"], row["service_name"]))
        shown = {(row["app_id"], row["service_name"]) for row in verdicts}
        for key in [key for key in self.failures if key not in shown and key not in excluded]:
            self._forget_failure(key)  # its service is gone from the target and the engine
        failed = {key: self.failures[key].error for key in self.marked_failed}
        self._report(report_state(target, self.current, verdicts, failed, running + steps))
        if not self.jobs:
            self._idle(verdicts, backing_off)

    def _report(self, state: dict) -> None:
        # Re-sent after a drift interval even when equal, so a restarted reporter learns it again.
        if state != self.last_report or time.monotonic() - self.last_report_at >= self.options.drift_interval:
            self.publish(CurrentStateReport(state, time.time()))
            self.last_report, self.last_report_at = state, time.monotonic()

    def _idle(self, verdicts: list[dict], backing_off: frozenset[Key]) -> None:
        if backing_off:
            retry_at = min(self.failures[key].retry_at for key in backing_off)
            if self.retry_timer_at is None or retry_at < self.retry_timer_at:
                self.retry_timer_at = retry_at
                self.after(retry_at - time.monotonic(), ("retry",))
        done, self.pass_ = self.pass_, None
        if done is None:
            return
        converged = self.target is not None and all(row["status"] == "converged" for row in verdicts)
        failed = tuple(sorted(key_text(key) for key in self.marked_failed))
        finished = time.time()
        if done.steps:
            self.log.info("%s after %s: %d steps in %.2f s%s", "converged" if converged else "idle", done.trigger,
                          done.steps, finished - done.started_at, f"; failed: {', '.join(failed)}" if failed else "")
        self.publish(ReconcilePass(done.trigger, self.etag, done.started_at, finished, done.steps, converged,
                                   failed))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
