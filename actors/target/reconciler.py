"""The reconciler: converges the Docker engine on the stored target state, level-triggered.

It reads the engine, plans (the pure planner), runs the planned steps in short-lived engine workers
(`actors.target.engine.worker`) and, whenever a step ends, reads the engine again and plans again, until the
plan is empty. It never blocks: engine calls run in the workers, so a long pull delays neither new
targets nor anything else; a newer target is planned at once and a pull it no longer needs is cancelled.

- A service with a step running, or with one that ended after the read being planned from started, gets
  no step; nor does an image or network that such a step is about: no step is repeated on an outdated
  view of the engine, and the other services go on meanwhile.
- A failed step is retried with per-service exponential backoff; after `max_attempts` failures the
  service is marked failed (recorded for status, shown in the report) and still retried at the backoff
  cap, while the rest of the device converges.
- The engine out of reach is a known state, not a crash: the reconciler records "engine unreachable" (status
  and the report say so), stops launching steps, and probes the engine with a read at a short capped
  backoff (`probe_min` .. `probe_max`, 0.5 .. 5 s), so it converges within seconds of the engine's return.
  Crashing instead would burn the restart intensity on an outage and leave the reconciler cooling down
  long after the engine is back (measured: 48.7 s). A step cut short by the outage is not a failure of
  its service: it is planned again from the first read after the engine returns.
- A drift check re-reads the engine on a timer: a container removed or stopped by hand comes back.
- Restarts asked for (RestartServices, via persistence: RestartsRecorded) are in the store until carried out
  (stopped and started again, recreated, or gone from the target; then ServicesRestarted), so neither a
  crash nor a new target forgets one: the configuration file holds the new values, so the service must not
  keep running the old ones. At least once: a crash just after a restart may restart the service again.
- The device owner's policy (`policy`) is checked again whenever the stored target is loaded: one stored
  before the policy changed, that breaks it now, is not applied. The reconciler keeps the target it had in
  force (none after a restart: it then starts, stops and removes nothing) and records why, until a target
  that complies arrives; ports without an address get the policy's bind address, so changing it recreates
  the containers concerned.
- Thin shell: planning is `planner`, what starts when is `scheduling` (job pool, per-key retries), the
  report is `report`; this actor wires them to workers, timers and the bus. Every log line of a pass
  carries its number ("pass 7: ..."), so one pass can be followed through interleaved logs.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from functools import partial

import messages
from actors.api.keys import grant_keys, operator_key, opted_in
from actors.runtime.base import FleetletActor
from actors.runtime.logformat import context
from actors.target.engine.adapter import OWNER_PATTERN, EngineError
from actors.target.engine.worker import state_from_wire, step_to_wire
from actors.target.holds import HOLDS_KEY, apply_holds, holds_in_force
from actors.target.model import (
    EngineState,
    Key,
    OrphanedVolumes,
    Resource,
    Step,
    describe_step,
    orphan_clock,
    orphaned_volumes,
    orphans_from_json,
    orphans_to_json,
)
from actors.target.planner import VerdictRow, explain
from actors.target.policy import POLICY_USES, PolicyRefused, enforce_policy, on_this_host, policy_from_config
from actors.target.report import report_state
from actors.target.scheduling import (
    RESTART_REASON,
    Job,
    JobPool,
    RetryTracker,
    finished_restarts,
    key_text,
    next_steps,
    obsolete_pulls,
)
from conf.schema import ConfigError, non_negative, positive, setting
from messages.bus.engine import (
    EngineJobDone,
    EngineJobStarted,
    ReconcileNow,
    ReconcilePassFinished,
    RunEngineJob,
)
from messages.bus.outbox import ClearError, RecordError
from messages.bus.target import (
    ORPHANED_VOLUMES_KEY,
    CurrentStateObserved,
    HoldsRecorded,
    OrphanedVolumesSeen,
    RestartsRecorded,
    ServicesRestarted,
    TargetStateStored,
)
from messages.protocol.target_state import (
    InvalidTargetState,
    TargetState,
    parse_target_state,
)
from messages.transport.backoff import backoff_delay
from store import Store


@dataclass(frozen=True)
class ReconcilerSettings:
    max_parallel: int = setting(4, rule=positive)  # engine steps running at once
    drift_interval: float = setting(30.0, rule=positive)  # seconds between drift checks (re-read and converge)
    retry_base: float = setting(2.0, rule=positive)  # a failed service is retried after this, doubling up to retry_max
    retry_max: float = setting(300.0, rule=positive)
    max_attempts: int = setting(3, rule=positive)  # failures after which a service is marked failed (still retried)
    engine_timeout: float = setting(30.0, rule=positive)  # seconds for one engine API call
    stop_timeout: int = setting(10, rule=non_negative)  # seconds a container gets to stop before it is killed
    volume_grace: float = setting(86400.0, rule=non_negative)  # seconds an app's volumes outlive the app
    probe_min: float = setting(0.5, rule=positive)  # engine unreachable: probe after this, doubling up to probe_max
    probe_max: float = setting(5.0, rule=positive)


def target_to_plan(target: TargetState, holds: object, etag: str | None, key_file: str) -> TargetState:
    """What the reconciler converges on: the target in force, with the services held stopped through the local
    API set to ``running: false`` and the API keys in the environment of the services that asked for one."""
    target = apply_holds(target, holds_in_force(holds, etag))
    return grant_keys(target, operator_key(key_file, create=True)) if opted_in(target) else target


def retry_delay(settings: ReconcilerSettings, count: int) -> float:
    """Seconds before retrying a service after `count` failures: the backoff's ceiling, no jitter, since the
    engine is local and there is no herd to spread."""
    return backoff_delay(count, settings.retry_base, settings.retry_max)


def probe_delay(settings: ReconcilerSettings, probes: int) -> float:
    """Seconds before the next read of an unreachable engine, after `probes` failed ones: short and capped,
    since the engine is local and its return should be noticed at once."""
    return backoff_delay(probes, settings.probe_min, settings.probe_max)


@dataclass(frozen=True)
class DriftCheck:
    """Timer payload: re-read the engine and converge (re-armed each time it fires)."""


@dataclass(frozen=True)
class RetryDue:
    """Timer payload: the earliest backoff of a failing service is over."""


@dataclass(frozen=True)
class EngineProbe:
    """Timer payload: read the unreachable engine again."""


@dataclass
class Pass:
    """From a trigger (new target, drift check, retry...) until the reconciler is idle again."""
    number: int  # on every log line of the pass (controller-runtime's reconcileID)
    trigger: str
    started_at: float = field(default_factory=time.time)
    steps: int = 0


class Reconciler(FleetletActor):
    Settings = ReconcilerSettings
    uses = ("device.uuid", "store", "api.key_file", *POLICY_USES)
    options: ReconcilerSettings
    # Set in started(). stopping() and crash() may come before it: they use `pool` (made with the actor) and
    # close `store` only once opened.
    owner: str
    store: Store
    target: TargetState | None  # None until a target is stored
    etag: str | None
    current: EngineState | None  # None until the first read is back
    retries: RetryTracker
    restarts: dict[Key, str]
    retry_timer_at: float | None
    engine_error_cleared: bool
    engine_down: str | None  # why the engine is unreachable, None while it answers
    probes: int  # failed reads since it became unreachable
    last_report: dict[str, object] | None  # the last CurrentStateObserved: apps, engine
    last_report_at: float
    passes: int
    pass_: Pass | None
    orphans_since: dict[Resource, float]  # when each volume of an app that left the target was first seen so

    def __init__(self) -> None:
        super().__init__()
        self.pool = JobPool()

    @classmethod
    def check_config(cls, config: dict) -> None:
        owner = config["device"]["uuid"]
        if not OWNER_PATTERN.fullmatch(owner):
            raise ConfigError(f"device.uuid {owner!r} cannot label containers: it must match {OWNER_PATTERN.pattern}")

    def started(self) -> None:
        self.owner = self.config["device"]["uuid"]
        self.policy = policy_from_config(self.config, on_this_host)
        self.store = Store.open(self.config["store"]["path"], readonly=True)
        self.target = None
        self.etag = None
        self.current = None
        self.pool = JobPool()
        self.retries = RetryTracker(partial(retry_delay, self.options), self.options.max_attempts)
        self.restarts = {(r.app_id, r.service_name): "stop" for r in self.store.pending_restarts()}
        self.retry_timer_at = None
        self.engine_error_cleared = False
        self.engine_down = None
        self.probes = 0
        self.last_report = None
        self.last_report_at = 0.0
        self.passes = 0
        self.pass_ = None
        self.orphans_since = orphans_from_json(self.store.get(ORPHANED_VOLUMES_KEY, {}))
        self._load_target()
        self.after(self.options.drift_interval, DriftCheck())
        self._trigger("start")

    def stopping(self) -> None:
        self._kill_workers()
        if "store" in vars(self):  # opened by started()
            self.store.close()

    def crash(self, exc: BaseException) -> None:
        # An exiting actor waits for its children: end the workers so the restart is not delayed by them.
        self._kill_workers()
        super().crash(exc)

    def _log(self, level: int, text: str, *args: object) -> None:
        """Log, prefixed with the number of the pass underway (if any)."""
        if self.pass_ is not None:
            text, args = "pass %d: " + text, (self.pass_.number, *args)
        self.log.log(level, text, *args, extra=context(self.pass_.number if self.pass_ else None, self.etag))

    # -- triggers -----------------------------------------------------------------------------------

    def on_TargetStateStored(self, msg: TargetStateStored) -> None:
        self._begin_pass("new target")
        if (target := self._load_target()) is not None:
            for job_id in obsolete_pulls(target, self.pool.pulls()):
                self._cancel(job_id)
            for key in self.retries.keys():
                self._forget_failure(key)
        self._request_read()

    def on_HoldsRecorded(self, msg: HoldsRecorded) -> None:
        """A service was stopped or started through the local API: the target planned for changed."""
        self._begin_pass("held services changed")
        self._load_target()
        self._request_read()

    def on_ReconcileNow(self, msg: ReconcileNow) -> None:
        self._trigger(msg.reason)

    def on_RestartsRecorded(self, msg: RestartsRecorded) -> None:
        self._begin_pass("restart services")
        self._log(logging.INFO, "restarting %s of app %s: %s", ", ".join(msg.services), msg.app_id, msg.reason)
        app = None if self.target is None else self.target.app(msg.app_id)
        for service_name in msg.services:
            if app is None or app.service(service_name) is None:
                self._log(logging.WARNING, "cannot restart %s/%s: not in the target state", msg.app_id,
                           service_name)
                self.publish(ServicesRestarted(msg.app_id, service_name))  # nothing to carry out: forget it
                continue
            self.restarts[msg.app_id, service_name] = "stop"
            self._forget_failure((msg.app_id, service_name))
        self._request_read()

    def on_timer(self, payload: object) -> None:
        match payload:
            case DriftCheck():
                self.after(self.options.drift_interval, DriftCheck())
                self._trigger("drift check")
            case RetryDue():
                self.retry_timer_at = None
                self._trigger("retry")
            case EngineProbe():
                self._begin_pass("engine probe")
                self._request_read(probe=True)

    def _trigger(self, reason: str) -> None:
        self._begin_pass(reason)
        self._request_read()

    def _begin_pass(self, reason: str) -> None:
        """A trigger while a pass is underway joins it (the pass keeps its first trigger)."""
        if self.pass_ is None:
            self.passes += 1
            self.pass_ = Pass(self.passes, reason)

    def _load_target(self) -> TargetState | None:
        """Take the stored target; it if it differs from the one in force, else None."""
        stored = self.store.load_target()
        if stored is None:
            return None
        try:
            target = enforce_policy(parse_target_state(stored.document), self.policy)
            target = target_to_plan(target, self.store.get(HOLDS_KEY), stored.etag, self.config["api"]["key_file"])
        except InvalidTargetState as exc:  # persistence stores only validated documents: a bug, keep the old one
            self._log(logging.ERROR, "the stored target state %s is invalid: %s", stored.etag, exc.reason)
            self.publish(RecordError("reconciler", "target", f"stored target is invalid: {exc.reason}", time.time()))
            return None
        except PolicyRefused as exc:  # stored before the policy changed
            self._log(logging.ERROR, "the stored target state %s is not applied: %s", stored.etag, exc.reason)
            self.publish(RecordError("reconciler", "target", f"stored target is not applied: {exc.reason}",
                                     time.time()))
            return None
        changed = target != self.target
        self.target, self.etag = target, stored.etag
        return target if changed else None

    # -- jobs ---------------------------------------------------------------------------------------

    def _launch(self, step: Step | None) -> None:
        address = self.createActor("actors.target.engine.worker.EngineWorker")
        job_id = self.pool.add(step, address)
        options = self.options
        self.send(address, messages.encode(RunEngineJob(job_id, self.owner, options.engine_timeout,
                                                     options.stop_timeout,
                                                     None if step is None else step_to_wire(step))))

    def _request_read(self, probe: bool = False) -> None:
        if self.engine_down is not None and not probe:
            return  # the probe timer reads next; triggers meanwhile change nothing the read will not see
        if self.pool.read_may_start():  # one read at a time; the next starts when it is back
            self._launch(None)

    def _cancel(self, job_id: int) -> None:
        job = self.pool.jobs[job_id]
        job.cancelled = True
        what = "the read" if job.step is None else describe_step(job.step)  # only pulls are cancelled
        self._log(logging.INFO, "cancelling %s: the new target does not need it", what)
        if job.pid is not None:
            _kill(job.pid)

    def _kill_workers(self) -> None:
        for pid in self.pool.pids():
            _kill(pid)

    def on_EngineJobStarted(self, msg: EngineJobStarted) -> None:
        job = self.pool.jobs.get(msg.job_id)
        if job is not None:
            job.pid = msg.pid
            if job.cancelled:
                _kill(msg.pid)

    def on_EngineJobDone(self, msg: EngineJobDone) -> None:
        job = self.pool.pop(msg.job_id)
        if job is None:
            return
        if msg.unavailable:
            if job.step is not None:
                self.pool.step_ended(job.step)  # cut short by the outage: planned again after it
            self._engine_unreachable(msg.error or "the engine is unavailable")  # the worker always says why
            return
        if job.step is None:
            if msg.error or msg.state is None:  # a read that did not fail has a state
                raise EngineError(None, f"cannot read the engine: {msg.error}")
            self._read_done(job, state_from_wire(msg.state))
        else:
            self._step_done(job.step, msg.error)

    def on_child_exited(self, address: object) -> None:
        job_id = self.pool.id_of(address)
        job = None if job_id is None else self.pool.pop(job_id)
        if job is None:
            return  # it answered before exiting
        if job.step is None:
            raise EngineError(None, "the engine worker reading the state died")
        self._step_done(job.step, None if job.cancelled else "the engine worker died without an answer")

    def _step_done(self, step: Step, error: str | None) -> None:
        self.pool.step_ended(step)
        self.figures.count("fleetlet_steps", action=step_to_wire(step).action, outcome="failed" if error else "ok")
        if self.pass_ is not None:
            self.pass_.steps += 1
        if error:
            self._failed(step.key, error)
        elif step.key in self.restarts and step.reason == RESTART_REASON:
            self.restarts[step.key] = "start"
        self._request_read()

    def _failed(self, key: Key, error: str) -> None:
        failure = self.retries.failed(key, error, time.monotonic())
        self._log(logging.WARNING, "%s failed (%d): %s", key_text(key), failure.count, error)
        if key in self.retries.marked:
            self.publish(RecordError("reconciler", key_text(key),
                                     f"{error} (failed {failure.count} times, still retrying)", time.time()))

    def _forget_failure(self, key: Key) -> None:
        if self.retries.forget(key):
            self.publish(ClearError("reconciler", key_text(key)))

    def _engine_unreachable(self, error: str) -> None:
        """Record the outage once, say it in the report, and probe again after a short capped backoff."""
        if self.engine_down is None:
            self._log(logging.WARNING, "the engine is unreachable, probing it: %s", error)
            self.publish(RecordError("reconciler", "engine", f"engine unreachable: {error}", time.time()))
            self.engine_error_cleared = False
            self.engine_down = error
            self._report({**(self.last_report or {}), "engine": {"status": "unreachable", "reason": error[:300]}})
        self.probes += 1
        if not self.pool.jobs:  # the pass cannot go on; the probe that finds the engine back starts the next
            self.pass_ = None
        self.after(probe_delay(self.options, self.probes), EngineProbe())

    # -- the loop -----------------------------------------------------------------------------------

    def _read_done(self, job: Job, current: EngineState) -> None:
        self.current = current
        if self.engine_down is not None:
            self._log(logging.INFO, "the engine answers again after %d probes", self.probes)
            self.engine_down, self.probes = None, 0
        if not self.engine_error_cleared:
            self.publish(ClearError("reconciler", "engine"))
            self.engine_error_cleared = True
        if self.pool.take_read_wanted():
            self._launch(None)
        self._act(current, self.pool.unseen_by(job.read_number))

    def _act(self, current: EngineState, unseen: list[Step]) -> None:
        """Start what the plan says now, from `current` (the last read); `unseen`: steps that ended after it."""
        running = self.pool.running_steps()
        backing_off = self.retries.backing_off(time.monotonic())
        excluded = frozenset(step.key for step in running + unseen) | backing_off
        target = self.target if self.target is not None else TargetState()
        for key in finished_restarts(current, self.restarts) - excluded:
            del self.restarts[key]
            self.publish(ServicesRestarted(key[0], key[1] or ""))
        orphans = self._orphans(target, current)
        steps = [] if self.target is None else next_steps(
            target, current, running + unseen, backing_off, self.restarts,
            self.options.max_parallel - len(running), orphans)
        for step in steps:
            self._log(logging.INFO, "%s %s: %s", step.action.value, key_text(step.key), step.reason)
            self._launch(step)
        verdicts = [] if self.target is None else explain(target, current, excluded, orphans)
        for row in verdicts:
            if row["status"] == "converged":
                self._forget_failure((row["app_id"], row["service_name"]))
        shown = {(row["app_id"], row["service_name"]) for row in verdicts}
        for key in [key for key in self.retries.keys() if key not in shown and key not in excluded]:
            self._forget_failure(key)  # its service is gone from the target and the engine
        self._report({**report_state(target, current, verdicts, self.retries.marked_errors(), running + steps),
                      "engine": {"status": "ok"}})
        if not self.pool.jobs:
            self._idle(verdicts, backing_off)

    def _orphans(self, target: TargetState, current: EngineState) -> OrphanedVolumes:
        """The volume clock for this plan; a change goes to persistence first, so a restart keeps it."""
        now = time.time()  # wall clock: the grace outlives restarts and reboots
        since = orphan_clock(self.orphans_since, orphaned_volumes(target, current), now)
        if since != self.orphans_since:
            self.publish(OrphanedVolumesSeen(orphans_to_json(since)))
            self.orphans_since = since
        return OrphanedVolumes(now, self.options.volume_grace, since)

    def _report(self, state: dict[str, object]) -> None:
        # Re-sent after a drift interval even when equal, so a restarted reporter learns it again.
        if state != self.last_report or time.monotonic() - self.last_report_at >= self.options.drift_interval:
            self.publish(CurrentStateObserved(state, time.time()))
            self.last_report, self.last_report_at = state, time.monotonic()

    def _idle(self, verdicts: list[VerdictRow], backing_off: frozenset[Key]) -> None:
        if backing_off:
            retry_at = self.retries.next_retry(backing_off)
            if self.retry_timer_at is None or retry_at < self.retry_timer_at:
                self.retry_timer_at = retry_at
                self.after(retry_at - time.monotonic(), RetryDue())
        if self.pass_ is None:
            return
        converged = self.target is not None and all(row["status"] == "converged" for row in verdicts)
        failed = tuple(sorted(key_text(key) for key in self.retries.marked))
        finished = time.time()
        done = self.pass_
        if done.steps:
            self._log(logging.INFO, "%s after %s: %d steps in %.2f s%s", "converged" if converged else "idle",
                       done.trigger, done.steps, finished - done.started_at,
                       f"; failed: {', '.join(failed)}" if failed else "")
        self.pass_ = None
        self.figures.observe("fleetlet_reconcile_pass_seconds", finished - done.started_at)
        self.publish(ReconcilePassFinished(done.trigger, self.etag, done.started_at, finished, done.steps, converged,
                                   failed))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
